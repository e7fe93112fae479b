use super::parse::is_blank;
use super::*;
use crate::dle::{
    Application, Compress, DataPath, Encrypt, Estimate, ExecuteWhere, FileList, Level, Property,
    Script,
};
use crate::features::Feature;
use proptest::prelude::*;

fn f() -> Features {
    Features::amanda_3_5_1()
}

// The DLEs of the spec's test vectors 4, 6 and 7 (also read by dumper's request tests).
const TV4: &str = include_str!("../../../../tests/fixtures/spec/dle-tv4.xml");
const TV6: &str = include_str!("../../../../tests/fixtures/spec/dle-tv6.xml");
const TV7: &str = include_str!("../../../../tests/fixtures/spec/dle-tv7.xml");

fn home() -> Dle {
    Dle {
        program: "GNUTAR".into(),
        estimates: vec![Estimate::Client],
        disk: Some("/home".into()),
        auth: Some("bsdtcp".into()),
        compress: Compress::Fast,
        index: true,
        data_path: Some(DataPath::Amanda),
        ..Dle::default()
    }
}

#[test]
fn spec_test_vectors_parse_and_reencode_identically() {
    for (text, layout, levels, spindle) in [
        (TV4, XmlLayout::Selfcheck, vec![], 0),
        (
            TV6,
            XmlLayout::Sendsize,
            vec![Level::new(0), Level::new(1)],
            -1,
        ),
        (TV7, XmlLayout::Sendbackup, vec![Level::new(0)], 0),
    ] {
        let dles = parse_dles(text.as_bytes()).unwrap();
        let want = Dle {
            levels,
            spindle,
            ..home()
        };
        assert_eq!(dles, vec![want.clone()], "{layout:?}");
        assert_eq!(
            String::from_utf8(want.to_xml(layout, &f())).unwrap(),
            text,
            "{layout:?}"
        );
    }
}

#[test]
fn format_tag_uses_raw_base64_for_unsafe_values() {
    assert_eq!(
        format_tag("disk", b"/tmp/plain"),
        b"<disk>/tmp/plain</disk>"
    );
    assert_eq!(
        String::from_utf8(format_tag(
            "disk",
            "/tmp/amanda-harness/data/dle with space é".as_bytes()
        ))
        .unwrap(),
        "<disk encoding=\"raw\" raw=\"L3RtcC9hbWFuZGEtaGFybmVzcy9kYXRhL2RsZSB3aXRoIHNwYWNlIMOp\">/tmp/amanda-harness/data/dle_with_space___</disk>"
    );
    assert_eq!(
        format_tag("x", b"a&b"),
        b"<x encoding=\"raw\" raw=\"YSZi\">a_b</x>"
    );
}

#[test]
fn raw_attribute_wins_over_text() {
    let xml = "<dle><program>GNUTAR</program><disk encoding=\"raw\" raw=\"L3RtcC9hIGI=\">/tmp/a_b</disk></dle>";
    let dles = parse_dles(xml.as_bytes()).unwrap();
    assert_eq!(dles[0].disk.as_ref().unwrap(), "/tmp/a b");
    // an undecodable raw attribute is ignored, the text is used
    let xml = "<dle><program>GNUTAR</program><disk raw=\"!!\">/tmp/x</disk></dle>";
    assert_eq!(
        parse_dles(xml.as_bytes()).unwrap()[0]
            .disk
            .as_ref()
            .unwrap(),
        "/tmp/x"
    );
}

#[test]
fn gmarkup_entities_comments_and_empty_elements() {
    let xml = "<?xml version=\"1.0\"?><!-- hi --><dle><program>GNUTAR</program>\
               <disk>/a&amp;b&#x20;&#65;&lt;&gt;&quot;&apos;</disk><index/><auth><![CDATA[x]]>bsd</auth></dle>";
    let d = &parse_dles(xml.as_bytes()).unwrap()[0];
    assert_eq!(d.disk.as_ref().unwrap(), "/a&b A<>\"'");
    assert_eq!(d.auth.as_ref().unwrap(), "bsd");
    assert!(!d.index);
}

#[test]
fn newlines_are_dropped_like_pgets_but_kept_in_text_mode() {
    let xml = b"<dle><program>GNUTAR</program><disk>/a\nb</disk></dle>";
    assert_eq!(parse_dles(xml).unwrap()[0].disk.as_ref().unwrap(), "/ab");
    assert_eq!(
        parse_dles_text(xml).unwrap()[0].disk.as_ref().unwrap(),
        "/a\nb"
    );
}

#[test]
fn defaults_trailing_space_and_device() {
    let d = &parse_dles(b"<dle><program>GNUTAR  </program><disk>/x </disk></dle>").unwrap()[0];
    assert_eq!(d.program, "GNUTAR");
    assert_eq!(d.disk.as_ref().unwrap(), "/x");
    assert_eq!(d.estimates, vec![Estimate::Client]);
    assert_eq!(d.effective_device().unwrap(), "/x");
    assert!(d.record);
}

fn err(xml: &str) -> XmlError {
    parse_dles(xml.as_bytes()).unwrap_err()
}

#[test]
fn amxml_errors_have_amandas_text_and_a_position() {
    let e = err("<dle>\n  <disk>/a</disk>\n  <disk>/b</disk>\n</dle>");
    assert_eq!(e.amanda_message(), "XML: Duplicate disk element");
    assert_eq!((e.line, e.column), (3, 3));
    assert_eq!(
        e.to_string(),
        "XML: Duplicate disk element (line 3, column 3)"
    );
    assert_eq!(
        err("<dle><frob>1</frob></dle>").amanda_message(),
        "XML: Invalid frob element"
    );
    assert_eq!(
        err("<disk>/a</disk>").amanda_message(),
        "XML: Invalid disk element"
    );
    assert_eq!(
        err("<dle><dle></dle></dle>").amanda_message(),
        "XML: Invalid dle element"
    );
    assert_eq!(
        err("<dle foo=\"1\"></dle>").amanda_message(),
        "XML: Invalid attribute 'foo' for dle element"
    );
    assert_eq!(
        err("<dle>text</dle>").amanda_message(),
        "XML: dle doesn't have text 'text'"
    );
    assert_eq!(
        err("<dle><index>maybe</index></dle>").amanda_message(),
        "XML: Invalid index (maybe)"
    );
    assert_eq!(
        err("<dle><estimate>CLIENT FOO</estimate></dle>").amanda_message(),
        "XML: bad estimate: CLIENT FOO"
    );
    assert_eq!(
        err("<dle><datapath>NFS</datapath></dle>").amanda_message(),
        "XML: bad datapath value 'NFS'"
    );
    assert_eq!(
        err("<dle><program>APPLICATION</program></dle>").amanda_message(),
        "XML: program set to APPLICATION but no application set"
    );
    assert_eq!(
        err("<dle><backup-program></backup-program></dle>").amanda_message(),
        "XML: No plugin set for application"
    );
    assert_eq!(
        err("<dle><script><execute_where>CLIENT</execute_where></script></dle>").amanda_message(),
        "XML: No plugin set for script"
    );
    assert_eq!(
        err("<dle><backup-program><plugin>a</plugin><plugin>b</plugin></backup-program></dle>")
            .amanda_message(),
        "XML: Duplicate plugin element in 'backup-program'"
    );
    assert_eq!(
        err("<dle><property>x</property></dle>").amanda_message(),
        "XML: amtext not defined for 'property'"
    );
    assert_eq!(
        err("<dle><disk>a</disk>").amanda_message(),
        "Document ended unexpectedly with elements still open — “dle” was the last element opened"
    );
    assert_eq!(
        err("   ").amanda_message(),
        "Document was empty or contained only whitespace"
    );
    assert_eq!(
        err("x<dle></dle>").amanda_message(),
        "Document must begin with an element (e.g. <book>)"
    );
    assert_eq!(
        err("<dle></disk>").amanda_message(),
        "Element “disk” was closed, but the currently open element is “dle”"
    );
    assert_eq!(
        err("<dle><disk>&bogus;</disk></dle>").amanda_message(),
        "Entity name “bogus” is not known"
    );
    assert!(matches!(
        err("<dle><disk>&#0;</disk></dle>").kind,
        XmlErrorKind::BadEntity(_)
    ));
    assert!(matches!(
        err("<dle><disk>\u{0}</disk></dle>").kind,
        XmlErrorKind::UnexpectedEnd { .. }
    ));
    assert_eq!(
        parse_dles(b"<dle><disk>\xff</disk></dle>")
            .unwrap_err()
            .kind,
        XmlErrorKind::InvalidUtf8
    );
}

#[test]
fn single_dle_rules_of_sendbackup() {
    assert_eq!(
        parse_single_dle(TV7.as_bytes()).unwrap().disk.unwrap(),
        "/home"
    );
    let two = format!("{TV7}{TV7}");
    assert_eq!(
        parse_single_dle(two.as_bytes())
            .unwrap_err()
            .amanda_message(),
        "Only one DLE allowed"
    );
    assert_eq!(
        parse_single_dle(b"").unwrap_err().amanda_message(),
        "Document was empty or contained only whitespace"
    );
}

/// Fuzz finding (dle_xml, crash-6928cb72): a program other than GNUTAR/DUMP without a
/// backup-program was encoded as `APPLICATION`, which no client can parse.
#[test]
fn unknown_program_without_application_is_written_as_is() {
    let d = &parse_dles(b"<dle><program>GN!TAR</program><disk>/a</disk></dle>").unwrap()[0];
    let x = d.to_xml(XmlLayout::Selfcheck, &f());
    assert!(x.starts_with(b"<dle>\n  <program>GN!TAR</program>\n"));
    assert_eq!(&parse_dles(&x).unwrap()[0], d);
}

#[test]
fn optional_with_any_text_is_set_and_property_names_replace() {
    let d = &parse_dles(
        b"<dle><program>GNUTAR</program><exclude><optional>NO</optional></exclude>\
          <property><name>a</name><value>1</value></property>\
          <property><name>a</name><value>2</value><value>3</value></property></dle>",
    )
    .unwrap()[0];
    assert!(d.exclude.as_ref().unwrap().optional);
    assert_eq!(
        d.properties,
        vec![Property {
            name: "a".into(),
            priority: false,
            values: vec!["2".into(), "3".into()]
        }]
    );
}

#[test]
fn everything_encodes_like_the_server_and_parses_back() {
    let d = Dle {
        program: "APPLICATION".into(),
        application: Some(Application {
            plugin: "amgtar".into(),
            properties: vec![
                Property {
                    name: "atime-preserve".into(),
                    priority: true,
                    values: vec!["no".into()],
                },
                Property {
                    name: "exclude".into(),
                    priority: false,
                    values: vec!["a b".into(), "c".into()],
                },
            ],
            client_name: Some("gtar".into()),
        }),
        estimates: vec![Estimate::Client, Estimate::Calcsize],
        disk: Some("/data".into()),
        device: Some("/dev/sda1".into()),
        levels: vec![Level {
            level: 1,
            server: true,
        }],
        spindle: 2,
        auth: Some("bsdtcp".into()),
        compress: Compress::Custom("/usr/bin/zstd".into()),
        encrypt: Encrypt::Custom {
            program: "/usr/sbin/amcrypt".into(),
            decrypt_option: Some("-d".into()),
        },
        record: false,
        index: true,
        kencrypt: true,
        data_path: Some(DataPath::DirectTcp(vec!["127.0.0.1:1".into()])),
        exclude: Some(FileList {
            files: vec!["*.o".into()],
            lists: vec!["/etc/x".into()],
            optional: true,
        }),
        include: Some(FileList::default()),
        properties: vec![Property::new("dp", "v")],
        scripts: vec![Script {
            plugin: "script-email".into(),
            execute_where: ExecuteWhere::Server,
            execute_on: vec!["PRE-DLE-BACKUP".into(), "POST-DLE-BACKUP".into()],
            properties: vec![Property::new("mailto", "root")],
            client_name: None,
        }],
        dumpdate: None,
    };
    let sendsize = String::from_utf8(d.to_xml(XmlLayout::Sendsize, &f())).unwrap();
    let want = "<dle>
  <program>APPLICATION</program>
  <backup-program>
    <plugin>amgtar</plugin>
    <property>
      <name>atime-preserve</name>
      <priority>yes</priority>
      <value>no</value>
    </property>
    <property>
      <name>exclude</name>
      <value encoding=\"raw\" raw=\"YSBi\">a_b</value>      <value>c</value>
    </property>
    <client_name>gtar</client_name>
  </backup-program>
  <estimate>CLIENT CALCSIZE </estimate>
  <disk>/data</disk>
  <diskdevice>/dev/sda1</diskdevice>
  <level>1<server>YES</server></level>
    <spindle>2</spindle>
  <auth>bsdtcp</auth>
  <compress>CUSTOM<custom-compress-program>/usr/bin/zstd</custom-compress-program>
  </compress>
  <encrypt>CUSTOM<custom-encrypt-program>/usr/sbin/amcrypt</custom-encrypt-program>
    <decrypt-option>-d</decrypt-option>
  </encrypt>
  <record>NO</record>
  <index>YES</index>
  <kencrypt>YES</kencrypt>
  <datapath>DIRECTTCP
    <directtcp>127.0.0.1:1</directtcp>
  </datapath>
  <exclude>
    <file>*.o</file>
    <list>/etc/x</list>
    <optional>YES</optional>
  </exclude>
  <include>
  </include>
  <script>
    <plugin>script-email</plugin>
    <execute_where>SERVER</execute_where>
    <execute_on>PRE-DLE-BACKUP,POST-DLE-BACKUP</execute_on>
    <property>
      <name>mailto</name>
      <value>root</value>
    </property>
  </script>
</dle>
";
    assert_eq!(sendsize, want);
    let back = parse_dles(sendsize.as_bytes()).unwrap();
    assert_eq!(
        back,
        vec![Dle {
            properties: vec![],
            ..d.clone()
        }]
    );

    // sendbackup: dumptype properties kept because a script is present (3.5.1's cleaning)
    let sb = String::from_utf8(d.to_xml(
        XmlLayout::Sendbackup,
        &Features::empty().with(Feature::SENDBACKUP_REQ_DEVICE),
    ))
    .unwrap();
    assert!(sb.contains("<name>dp</name>"), "{sb}");
    let no_scripts = Dle {
        scripts: vec![],
        ..d.clone()
    };
    let sb =
        String::from_utf8(no_scripts.to_xml(XmlLayout::Sendbackup, &Features::empty())).unwrap();
    assert!(!sb.contains("<name>dp</name>"), "{sb}");
    assert!(!sb.contains("diskdevice"), "{sb}");
}

#[test]
fn server_custom_encryption_only_in_the_header_form() {
    let d = Dle {
        encrypt: Encrypt::ServerCustom {
            program: "/usr/sbin/amcrypt".into(),
            decrypt_option: None,
        },
        levels: vec![Level::new(0)],
        ..home()
    };
    let sb = String::from_utf8(d.to_xml(XmlLayout::Sendbackup, &f())).unwrap();
    assert!(!sb.contains("encrypt"), "{sb}");
    let hdr = String::from_utf8(d.to_xml(XmlLayout::HeaderDle, &f())).unwrap();
    assert!(hdr.contains(
        "  <encrypt>SERVER-CUSTOM<custom-encrypt-program>/usr/sbin/amcrypt</custom-encrypt-program>\n    <decrypt-option>(null)</decrypt-option>\n  </encrypt>\n"
    ), "{hdr}");
}

#[test]
fn old_estimate_forms() {
    let d = Dle {
        estimates: vec![Estimate::Calcsize, Estimate::Client],
        ..home()
    };
    let only_estimate = Features::empty().with(Feature::XML_ESTIMATE);
    let x = String::from_utf8(d.to_xml(XmlLayout::Selfcheck, &only_estimate)).unwrap();
    assert!(
        x.contains("\n  <estimate>CALCSIZE</estimate>  <calcsize>YES</calcsize>\n"),
        "{x}"
    );
    let none = String::from_utf8(d.to_xml(XmlLayout::Selfcheck, &Features::empty())).unwrap();
    assert!(
        none.starts_with(
            "<dle>\n  <program>GNUTAR</program>\n  <calcsize>YES</calcsize>\n  <disk>"
        ),
        "{none}"
    );
    assert_eq!(
        parse_dles(none.as_bytes()).unwrap()[0].estimates,
        vec![Estimate::Calcsize]
    );
}

#[test]
fn unsafe_plain_values_fall_back_to_raw() {
    let d = Dle {
        auth: Some("a<b".into()),
        compress: Compress::Custom("/x y ".into()),
        ..home()
    };
    let x = d.to_xml(XmlLayout::Selfcheck, &f());
    let back = parse_dles(&x).unwrap();
    assert_eq!(back[0].auth.as_ref().unwrap(), "a<b");
    assert_eq!(back[0].compress, Compress::Custom("/x y ".into()));
}

fn value() -> impl Strategy<Value = ByteString> {
    proptest::collection::vec(1u8..=255, 1..20)
        .prop_filter("not blank", |v| !is_blank(v))
        .prop_map(ByteString::from)
}

fn plain() -> impl Strategy<Value = ByteString> {
    "[A-Za-z0-9/._-][A-Za-z0-9/._ -]{0,10}[A-Za-z0-9/._-]".prop_map(ByteString::from)
}

fn property() -> impl Strategy<Value = Property> {
    (
        value(),
        any::<bool>(),
        proptest::collection::vec(value(), 0..3),
    )
        .prop_map(|(name, priority, values)| Property {
            name,
            priority,
            values,
        })
}

fn unique(props: Vec<Property>) -> Vec<Property> {
    let mut out: Vec<Property> = Vec::new();
    for p in props {
        if !out.iter().any(|o| o.name == p.name) {
            out.push(p);
        }
    }
    out
}

prop_compose! {
    fn arb_dle()(
        app in proptest::option::of((value(), proptest::collection::vec(property(), 0..3), proptest::option::of(value()))),
        legacy in prop_oneof![Just("GNUTAR"), Just("DUMP")],
        estimates in proptest::collection::vec(prop_oneof![Just(Estimate::Client), Just(Estimate::Server), Just(Estimate::Calcsize)], 1..4),
        disk in value(),
        device in proptest::option::of(value()),
        levels in proptest::collection::vec((any::<i32>(), any::<bool>()), 0..3),
        spindle in any::<i32>(),
        auth in proptest::option::of(plain()),
        compress in 0u8..7,
        prog in plain(),
        encrypt in 0u8..3,
        decrypt in proptest::option::of(plain()),
        flags in any::<(bool, bool, bool)>(),
        datapath in proptest::option::of(proptest::option::of(proptest::collection::vec(value(), 0..3))),
        exclude in proptest::option::of((proptest::collection::vec(value(), 0..3), proptest::collection::vec(value(), 0..2), any::<bool>())),
        properties in proptest::collection::vec(property(), 0..3),
        scripts in proptest::collection::vec((value(), any::<bool>(), proptest::collection::vec(prop_oneof![Just("PRE-DLE-BACKUP"), Just("POST-DLE-AMCHECK")], 0..3), proptest::collection::vec(property(), 0..2), proptest::option::of(value())), 0..2),
    ) -> Dle {
        let (record, index, kencrypt) = flags;
        let (program, application) = match app {
            Some((plugin, props, client_name)) => ("APPLICATION".into(), Some(Application { plugin, properties: unique(props), client_name })),
            None => (legacy.into(), None),
        };
        Dle {
            program,
            application,
            estimates,
            disk: Some(disk),
            device,
            levels: levels.into_iter().map(|(level, server)| Level { level, server }).collect(),
            spindle,
            auth,
            compress: match compress {
                0 => Compress::None, 1 => Compress::Fast, 2 => Compress::Best, 3 => Compress::Custom(prog.clone()),
                4 => Compress::ServerFast, 5 => Compress::ServerBest, _ => Compress::ServerCustom(prog.clone()),
            },
            encrypt: match encrypt {
                0 => Encrypt::None,
                1 => Encrypt::Custom { program: prog.clone(), decrypt_option: decrypt },
                _ => Encrypt::ServerCustom { program: prog, decrypt_option: Some(decrypt.unwrap_or_else(|| "-d".into())) },
            },
            record, index, kencrypt,
            data_path: datapath.map(|d| match d { None => DataPath::Amanda, Some(list) => DataPath::DirectTcp(list) }),
            exclude: exclude.clone().map(|(files, lists, optional)| FileList { files, lists, optional }),
            include: exclude.map(|(files, lists, optional)| FileList { files: lists, lists: files, optional }),
            properties: unique(properties),
            scripts: scripts.into_iter().map(|(plugin, server, on, props, client_name)| Script {
                plugin,
                execute_where: if server { ExecuteWhere::Server } else { ExecuteWhere::Client },
                execute_on: on.into_iter().map(ByteString::from).collect(),
                properties: unique(props),
                client_name,
            }).collect(),
            dumpdate: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sendsize_layout_round_trips(d in arb_dle()) {
        let x = d.to_xml(XmlLayout::Sendsize, &f());
        let back = parse_dles(&x).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&x)));
        let mut want = d.clone();
        want.properties.clear();
        if matches!(want.encrypt, Encrypt::ServerCustom { .. }) { want.encrypt = Encrypt::None; }
        prop_assert_eq!(back, vec![want]);
    }

    #[test]
    fn header_layout_round_trips(d in arb_dle()) {
        let x = d.to_xml(XmlLayout::HeaderDle, &f());
        let back = parse_dles(&x).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&x)));
        let mut want = d.clone();
        want.estimates = vec![Estimate::Client];
        want.spindle = 0;
        for l in &mut want.levels { l.server = false; }
        for p in &mut want.properties { p.priority = false; }
        prop_assert_eq!(back, vec![want]);
    }

    #[test]
    fn parser_never_panics(s in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_dles(&s);
        let _ = parse_dles_text(&s);
    }

    #[test]
    fn parser_never_panics_on_near_valid_xml(d in arb_dle(), cut in 0usize..2000, byte in any::<u8>()) {
        let mut x = d.to_xml(XmlLayout::Sendsize, &f());
        let at = cut % (x.len() + 1);
        x.insert(at, byte);
        let _ = parse_dles(&x);
        x.truncate(at);
        let _ = parse_dles(&x);
    }
}
