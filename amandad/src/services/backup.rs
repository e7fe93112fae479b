//! sendbackup: the plan (REP and streams) and the running dump.
//!
//! Interface with the event loop (the loop owns all I/O):
//! 1. [`start`] parses the request; on success the loop gets a [`BackupPlan`]: it opens the
//!    streams the plan names (DATA, MESG, and INDEX when `plan.index`), rewrites the CONNECT
//!    labels in `plan.rep` to stream ids, and sends the REP.
//! 2. When the server ACKs, the loop calls [`BackupRun::spawn`], writes
//!    [`BackupRun::mesg_header`] to MESG (nothing goes to DATA before it), then relays:
//!    - bytes from `Spawned::data` to DATA, passing each chunk to [`BackupRun::on_data`] first
//!      when [`BackupRun::crc_wanted`];
//!    - bytes from `Spawned::messages` to [`BackupRun::on_messages`], which appends MESG and
//!      INDEX bytes to a [`StreamOutput`] the loop then writes out;
//! 3. after EOF on both pipes the loop reaps the child and calls [`BackupRun::finish`], writes
//!    the final MESG/INDEX bytes, and closes every stream.
//!
//! (being written)
