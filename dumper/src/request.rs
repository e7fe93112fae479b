//! Request bodies, built the way the real server builds them for the **client's** features
//! (spec §6.1, §7.3): OPTIONS keys only for features the client advertised, XML DLEs when
//! the client has `fe_req_xml` (bit 80), the legacy one-line forms otherwise.
//!
//! What this module must not do: send anything, or choose levels.

use proto::dle::{Compress, Dle, Encrypt, Level, XmlLayout, legacy};
use proto::features::{Feature, Features};
use proto::options::Options;
use proto::request::request_body;

/// Who is asking whom.
#[derive(Clone, Copy, Debug)]
pub struct ReqContext<'a> {
    /// Our features (see `features::server_features`).
    pub ours: &'a Features,
    /// The client's features, from its noop reply.
    pub client: &'a Features,
    /// The host's `maxdumps`.
    pub maxdumps: u32,
    /// The host name as written in the disklist.
    pub hostname: &'a str,
    /// The configuration name.
    pub config: &'a str,
    /// The run timestamp (`None` for amcheck-like requests).
    pub timestamp: Option<&'a str>,
}

impl ReqContext<'_> {
    fn options(&self) -> Vec<u8> {
        Options::for_request(
            self.ours,
            self.client,
            self.maxdumps,
            self.hostname.as_bytes(),
            self.config.as_bytes(),
            self.timestamp.map(str::as_bytes),
        )
        .encode()
    }

    fn xml(&self) -> bool {
        self.client.has(Feature::REQ_XML)
    }
}

/// A request that cannot be made for this client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn check_dle(ctx: &ReqContext<'_>, dle: &Dle) -> Result<(), RequestError> {
    let application_ok = ctx.xml() && ctx.client.has(Feature::PROGRAM_APPLICATION_API);
    if !(dle.is_legacy_program() || application_ok) {
        return Err(RequestError(format!(
            "client {} does not support application-api (program APPLICATION needs an Amanda 3 client)",
            ctx.hostname
        )));
    }
    // The client filters its features allow, with the real server's words (spec §11.7,
    // issue 12); server filters need nothing from the client.
    let mut needs: Vec<(Feature, &str)> = Vec::new();
    match &dle.compress {
        Compress::Fast => needs.push((Feature::OPTIONS_COMPRESS_FAST, "fast compression")),
        Compress::Best => needs.push((Feature::OPTIONS_COMPRESS_BEST, "best compression")),
        Compress::Custom(_) => {
            needs.push((Feature::OPTIONS_COMPRESS_CUST, "client custom compression"))
        }
        _ => {}
    }
    if let Encrypt::Custom { decrypt_option, .. } = &dle.encrypt {
        needs.push((Feature::OPTIONS_ENCRYPT_CUST, "client data encryption"));
        if decrypt_option.is_some() {
            needs.push((
                Feature::OPTIONS_CLIENT_DECRYPT_OPTION,
                "client decrypt option",
            ));
        }
    }
    if let Some((_, what)) = needs.iter().find(|(f, _)| !ctx.client.has(*f)) {
        return Err(RequestError(format!(
            "{}:{} does not support {what}",
            ctx.hostname,
            String::from_utf8_lossy(dle.disk.as_deref().unwrap_or_default())
        )));
    }
    Ok(())
}

/// `SERVICE noop` with our features.
pub fn noop(ours: &Features) -> Vec<u8> {
    proto::request::noop_request(ours)
}

/// `SERVICE selfcheck` for these DLEs.
pub fn selfcheck(ctx: &ReqContext<'_>, dles: &[&Dle]) -> Result<Vec<u8>, RequestError> {
    let mut args = ctx.options();
    for d in dles {
        check_dle(ctx, d)?;
        if ctx.xml() {
            args.extend_from_slice(&d.to_xml(XmlLayout::Selfcheck, ctx.client));
        } else {
            args.extend_from_slice(&legacy::selfcheck_line(d, ctx.client));
        }
    }
    Ok(request_body(b"selfcheck", &args))
}

/// One DLE of a sendsize request: the DLE, the levels wanted, and for each level the
/// legacy `dumpdate` (`Y:M:D:h:m:s` UTC of the last dump below that level).
#[derive(Clone, Debug)]
pub struct SizeRequest<'a> {
    /// The DLE (its `levels` are ignored).
    pub dle: &'a Dle,
    /// The levels to estimate.
    pub levels: Vec<i32>,
    /// The dumpdate per level (legacy clients only).
    pub dumpdates: Vec<String>,
}

/// `SERVICE sendsize` for these DLEs.
pub fn sendsize(ctx: &ReqContext<'_>, dles: &[SizeRequest<'_>]) -> Result<Vec<u8>, RequestError> {
    let mut args = ctx.options();
    for r in dles {
        check_dle(ctx, r.dle)?;
        let mut d = r.dle.clone();
        d.levels = r.levels.iter().map(|&l| Level::new(l)).collect();
        if ctx.xml() {
            args.extend_from_slice(&d.to_xml(XmlLayout::Sendsize, ctx.client));
        } else {
            let dates: Vec<&[u8]> = r.dumpdates.iter().map(|s| s.as_bytes()).collect();
            args.extend_from_slice(&legacy::sendsize_lines(&d, &dates, ctx.client));
        }
    }
    Ok(request_body(b"sendsize", &args))
}

/// `SERVICE sendbackup` for one DLE at `level`, and the DLE text to keep in the dump-file
/// header (`DLE=<<ENDDLE`, XML clients only, as the real dumper does).
pub fn sendbackup(
    ctx: &ReqContext<'_>,
    dle: &Dle,
    level: i32,
    dumpdate: &str,
) -> Result<(Vec<u8>, Option<Vec<u8>>), RequestError> {
    check_dle(ctx, dle)?;
    let mut d = dle.clone();
    d.levels = vec![Level::new(level)];
    let mut args = ctx.options();
    let header_dle = if ctx.xml() {
        args.extend_from_slice(&d.to_xml(XmlLayout::Sendbackup, ctx.client));
        Some(d.to_xml(XmlLayout::HeaderDle, ctx.client))
    } else {
        args.extend_from_slice(&legacy::sendbackup_line(
            &d,
            dumpdate.as_bytes(),
            ctx.client,
        ));
        None
    };
    Ok((request_body(b"sendbackup", &args), header_dle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::dle::DataPath;

    fn gnutar() -> Dle {
        Dle {
            program: "GNUTAR".into(),
            disk: Some("/home".into()),
            auth: Some("bsdtcp".into()),
            compress: Compress::Fast,
            record: true,
            index: true,
            data_path: Some(DataPath::Amanda),
            spindle: -1,
            ..Dle::default()
        }
    }

    /// The run of spec TV7 (client.example.com, DailySet1), from `ours` to `client`.
    fn tv7<'a>(ours: &'a Features, client: &'a Features) -> ReqContext<'a> {
        ReqContext {
            ours,
            client,
            maxdumps: 1,
            hostname: "client.example.com",
            config: "DailySet1",
            timestamp: Some("20240101020304"),
        }
    }

    #[test]
    fn sendbackup_to_a_3_5_1_client_matches_spec_tv7() {
        let f = Features::amanda_3_5_1();
        let ctx = tv7(&f, &f);
        let (body, header) = sendbackup(&ctx, &gnutar(), 0, "1970:1:1:0:0:0").unwrap();
        let expected = concat!(
            "SERVICE sendbackup\n",
            "OPTIONS features=ffffffff9efefbfffffffffffffff3fffbf71f;maxdumps=1;hostname=client.example.com;config=DailySet1;timestamp=20240101020304;\n",
            include_str!("../../tests/fixtures/spec/dle-tv7.xml"),
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
        assert!(header.is_some());
    }

    // issue 12: the REQ says what the real server says for each compress/encrypt mode
    // (spec §11.2), server encryption never reaches the client, and what the client's
    // features do not allow is refused with the real server's words (spec §11.7).
    #[test]
    fn each_filter_mode_is_asked_for_as_the_real_server_asks() {
        let f = Features::amanda_3_5_1();
        let ctx = ReqContext {
            hostname: "c",
            config: "D",
            ..tv7(&f, &f)
        };
        let enc = |p: &str| Encrypt::Custom {
            program: p.into(),
            decrypt_option: Some("-d".into()),
        };
        let srv_enc = Encrypt::ServerCustom {
            program: "/usr/sbin/amcrypt-ossl".into(),
            decrypt_option: Some("-d".into()),
        };
        let cases: Vec<(Compress, Encrypt, &str)> = vec![
            (
                Compress::Fast,
                Encrypt::None,
                "  <compress>FAST</compress>\n",
            ),
            (
                Compress::Best,
                Encrypt::None,
                "  <compress>BEST</compress>\n",
            ),
            (
                Compress::Custom("/usr/bin/zstd".into()),
                Encrypt::None,
                "  <compress>CUSTOM<custom-compress-program>/usr/bin/zstd</custom-compress-program>\n  </compress>\n",
            ),
            (
                Compress::ServerFast,
                Encrypt::None,
                "  <compress>SERVER-FAST</compress>\n",
            ),
            (
                Compress::ServerBest,
                Encrypt::None,
                "  <compress>SERVER-BEST</compress>\n",
            ),
            (
                Compress::ServerCustom("/usr/bin/zstd".into()),
                Encrypt::None,
                "  <compress>SERVER-CUSTOM<custom-compress-program>/usr/bin/zstd</custom-compress-program>\n  </compress>\n",
            ),
            (
                Compress::Fast,
                enc("/usr/sbin/amcrypt-ossl"),
                "  <compress>FAST</compress>\n  <encrypt>CUSTOM<custom-encrypt-program>/usr/sbin/amcrypt-ossl</custom-encrypt-program>\n    <decrypt-option>-d</decrypt-option>\n  </encrypt>\n",
            ),
            (
                Compress::Fast,
                srv_enc.clone(),
                "  <compress>FAST</compress>\n",
            ),
        ];
        for (compress, encrypt, want) in cases {
            let mut d = gnutar();
            d.compress = compress;
            d.encrypt = encrypt;
            let (body, header) = sendbackup(&ctx, &d, 0, "x").unwrap();
            let body = String::from_utf8(body).unwrap();
            let want = format!("  <auth>bsdtcp</auth>\n{want}  <record>YES</record>");
            assert!(body.contains(&want), "{want}\nnot in\n{body}");
            let header = String::from_utf8(header.unwrap()).unwrap();
            assert_eq!(
                header.contains("<encrypt>SERVER-CUSTOM"),
                matches!(d.encrypt, Encrypt::ServerCustom { .. }),
                "{header}"
            );
            assert!(!body.contains("SERVER-CUSTOM<custom-encrypt"), "{body}");
        }

        let mut old = Features::amanda_3_5_1();
        old.remove(Feature::OPTIONS_COMPRESS_FAST);
        let ctx = ReqContext {
            client: &old,
            ..ctx
        };
        assert_eq!(
            sendbackup(&ctx, &gnutar(), 0, "x").unwrap_err().to_string(),
            "c:/home does not support fast compression"
        );
        let mut d = gnutar();
        d.compress = Compress::ServerFast;
        assert!(sendbackup(&ctx, &d, 0, "x").is_ok());
    }

    #[test]
    fn legacy_client_gets_the_one_line_form_and_only_its_option_keys() {
        let ours = Features::amanda_3_5_1();
        let client = Features::minimal_gnutar_client();
        let mut d = gnutar();
        d.auth = Some("bsd".into());
        let ctx = tv7(&ours, &client);
        let (body, header) = sendbackup(&ctx, &d, 0, "1970:1:1:0:0:0").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.ends_with(
                "config=DailySet1;\nGNUTAR /home  0 1970:1:1:0:0:0 OPTIONS |;auth=bsd;compress-fast;index;\n"
            ),
            "{text}"
        );
        assert!(!text.contains("timestamp="));
        assert!(header.is_none());
    }

    #[test]
    fn application_dle_needs_an_xml_client() {
        let ours = Features::amanda_3_5_1();
        let client = Features::minimal_gnutar_client();
        let mut d = gnutar();
        d.program = "APPLICATION".into();
        d.application = Some(proto::dle::Application {
            plugin: "amgtar".into(),
            ..Default::default()
        });
        let ctx = ReqContext {
            hostname: "c",
            config: "x",
            timestamp: None,
            ..tv7(&ours, &client)
        };
        let err = sendbackup(&ctx, &d, 0, "").unwrap_err();
        assert!(err.0.contains("application-api"), "{err}");
    }
}
