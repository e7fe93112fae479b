//! noop (spec §6.4): the reply is our feature list, whatever the request says.
//!
//! The real client (client-src/noop.c) reads and ignores its input and prints
//! `OPTIONS features=<client hex>;`; amcheck and planner use it to learn our features
//! before any other request.
//!
//! What this module must not do: look at the request (a noop never fails).

use crate::services::ServiceContext;

/// The whole REP body: `OPTIONS features=<ours>;\n`.
pub fn reply(ctx: &ServiceContext) -> Vec<u8> {
    format!("OPTIONS features={};\n", ctx.features_hex).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::context::tests::test_context;

    #[test]
    fn noop_reply_is_the_options_line_with_our_features() {
        let ctx = test_context();
        let want = format!(
            "OPTIONS features={};\n",
            crate::services::features::advertised_hex()
        );
        assert_eq!(String::from_utf8(reply(&ctx)).unwrap(), want);
    }
}
