//! amanda-rs integration tests: one binary, one module per area.
//! Modules are named after what they prove; shared helpers live in `util`.

mod amandad_hostile;
mod amandad_interop;
mod codec_client;
mod codec_server;
mod conf_configs;
mod dumper_holding;
mod dumper_hostile;
mod dumper_interop;
mod filters_programs;
mod firewall;
mod fuzz_corpora;
mod interop_reference;
mod netns;
mod outbound_ambackup;
mod outbound_ambackup_client;
mod outbound_ambackup_proxy;
mod outbound_dialin;
mod outbound_nat;
mod outbound_proxy;
mod portpool_sockets;
mod proto_bodies_golden;
mod proto_golden;
mod proxy_outbound;
mod runtar_attacks;
mod ssl_hostile;
mod ssl_interop;
mod ssl_util;
mod taper_vtapes;
mod util;
