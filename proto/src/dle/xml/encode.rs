//! The real server's DLE encoders (`xml_optionstr`, `xml_estimate`, `xml_application`,
//! `xml_scripts`, `xml_property`, and the request builders of amcheck, planner and dumper).

use super::{XmlLayout, format_tag, push_raw};
use crate::dle::{
    Application, Compress, DataPath, Dle, Encrypt, Estimate, ExecuteWhere, Property, Script,
};
use crate::features::{Feature, Features};
use crate::quote::ByteString;

/// A value the server prints with `%s`: verbatim when safe, else the raw form (see the
/// parent module's docs).
fn plain_tag(out: &mut Vec<u8>, tag: &str, value: &[u8]) {
    if !plain_is_safe(value) {
        out.extend_from_slice(&format_tag(tag, value));
    } else {
        out.push(b'<');
        out.extend_from_slice(tag.as_bytes());
        out.push(b'>');
        out.extend_from_slice(value);
        out.extend_from_slice(b"</");
        out.extend_from_slice(tag.as_bytes());
        out.push(b'>');
    }
}

/// Whether a value written with `%s` reads back unchanged: no markup or control bytes,
/// valid UTF-8, and no trailing space (the client trims it) unless it is empty.
fn plain_is_safe(value: &[u8]) -> bool {
    !value.iter().any(|&b| matches!(b, b'<' | b'&') || b < b' ')
        && std::str::from_utf8(value).is_ok()
        && value.last() != Some(&b' ')
}

/// Like [`plain_tag`] but only the opening part and value (for elements with children).
fn plain_open(out: &mut Vec<u8>, tag: &str, value: &[u8]) {
    let safe = plain_is_safe(value);
    out.push(b'<');
    out.extend_from_slice(tag.as_bytes());
    if safe {
        out.push(b'>');
        out.extend_from_slice(value);
    } else {
        push_raw(out, value);
    }
}

/// Which option elements [`Dle::write_options`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Options {
    /// A request to the client: no `SERVER-CUSTOM` encryption.
    Request,
    /// The dump-file header's copy: with `SERVER-CUSTOM` encryption.
    Header,
    /// ambackupd's replies: no `<auth>`, no `<datapath>`, no server encryption.
    Ambackupd,
}

impl Dle {
    /// The `<dle>` element exactly as a 3.5.1 server writes it for a client with features
    /// `client`, in `layout`, including the final newline. See [`XmlLayout`].
    pub fn to_xml(&self, layout: XmlLayout, client: &Features) -> Vec<u8> {
        let mut out = b"<dle>\n  ".to_vec();
        // APPLICATION (with the backup-program) for application DLEs; any other program
        // text as it is (the real server only has GNUTAR, DUMP and APPLICATION).
        let program: &[u8] = if self.is_legacy_program() || self.application.is_none() {
            &self.program
        } else {
            b"APPLICATION"
        };
        plain_tag(&mut out, "program", program);
        out.push(b'\n');
        let app = |out: &mut Vec<u8>| {
            if !self.is_legacy_program()
                && let Some(a) = &self.application
            {
                write_application(out, a, client);
            }
        };
        match layout {
            XmlLayout::Selfcheck
            | XmlLayout::Sendsize
            | XmlLayout::AmbackupdCheck
            | XmlLayout::AmbackupdBackup => {
                let ambackupd = matches!(
                    layout,
                    XmlLayout::AmbackupdCheck | XmlLayout::AmbackupdBackup
                );
                app(&mut out);
                if layout == XmlLayout::AmbackupdBackup {
                    out.extend_from_slice(b"  ");
                } else {
                    write_estimate(&mut out, &self.estimates, client);
                    out.extend_from_slice(b"\n  ");
                }
                out.extend_from_slice(&format_tag(
                    "disk",
                    self.disk.as_deref().unwrap_or_default(),
                ));
                out.push(b'\n');
                if let Some(device) = &self.device {
                    out.extend_from_slice(b"  ");
                    out.extend_from_slice(&format_tag("diskdevice", device));
                    out.push(b'\n');
                }
                if layout == XmlLayout::Sendsize {
                    for level in &self.levels {
                        out.extend_from_slice(format!("  <level>{}", level.level).as_bytes());
                        if level.server && client.has(Feature::XML_LEVEL_SERVER) {
                            out.extend_from_slice(b"<server>YES</server>");
                        }
                        out.extend_from_slice(b"</level>\n");
                    }
                    out.extend_from_slice(
                        format!("    <spindle>{}</spindle>\n", self.spindle).as_bytes(),
                    );
                }
                if layout == XmlLayout::AmbackupdBackup {
                    for level in &self.levels {
                        out.extend_from_slice(
                            format!("  <level>{}</level>\n", level.level).as_bytes(),
                        );
                    }
                }
                let options = if ambackupd {
                    Options::Ambackupd
                } else {
                    Options::Request
                };
                self.write_options(&mut out, client, options);
                out.extend_from_slice(b"</dle>\n");
            }
            XmlLayout::Sendbackup | XmlLayout::HeaderDle => {
                let header = layout == XmlLayout::HeaderDle;
                out.extend_from_slice(b"  ");
                out.extend_from_slice(&format_tag(
                    "disk",
                    self.disk.as_deref().unwrap_or_default(),
                ));
                out.push(b'\n');
                if let Some(device) = &self.device
                    && client.has(Feature::SENDBACKUP_REQ_DEVICE)
                {
                    out.extend_from_slice(b"  ");
                    out.extend_from_slice(&format_tag("diskdevice", device));
                    out.push(b'\n');
                }
                for level in &self.levels {
                    out.extend_from_slice(format!("  <level>{}</level>\n", level.level).as_bytes());
                }
                let options = if header {
                    Options::Header
                } else {
                    Options::Request
                };
                self.write_options(&mut out, client, options);
                let keep_properties =
                    header || client.has(Feature::DUMPTYPE_PROPERTY) || !self.scripts.is_empty();
                if keep_properties {
                    for p in &self.properties {
                        write_property(&mut out, p, false);
                    }
                }
                app(&mut out);
                out.extend_from_slice(b"</dle>\n");
            }
        }
        out
    }

    /// `xml_optionstr`: the option elements, each line joined by `\n`, then the scripts.
    fn write_options(&self, out: &mut Vec<u8>, client: &Features, form: Options) {
        let server_encrypt = form == Options::Header;
        let ambackupd = form == Options::Ambackupd;
        let mut items: Vec<Vec<u8>> = Vec::new();
        if client.has(Feature::OPTIONS_AUTH) && !ambackupd {
            let mut v = b"  ".to_vec();
            plain_tag(&mut v, "auth", self.auth.as_deref().unwrap_or_default());
            items.push(v);
        }
        let custom = |kind: &[u8], prog: &[u8]| {
            let mut v = b"  ".to_vec();
            plain_open(&mut v, "compress", kind);
            plain_tag(&mut v, "custom-compress-program", prog);
            v.extend_from_slice(b"\n  </compress>");
            v
        };
        match &self.compress {
            Compress::None => {}
            Compress::Fast => items.push(b"  <compress>FAST</compress>".to_vec()),
            Compress::Best => items.push(b"  <compress>BEST</compress>".to_vec()),
            Compress::Custom(p) => items.push(custom(b"CUSTOM", p)),
            Compress::ServerFast => items.push(b"  <compress>SERVER-FAST</compress>".to_vec()),
            Compress::ServerBest => items.push(b"  <compress>SERVER-BEST</compress>".to_vec()),
            Compress::ServerCustom(p) => items.push(custom(b"SERVER-CUSTOM", p)),
        }
        match &self.encrypt {
            Encrypt::None => {}
            Encrypt::Custom {
                program,
                decrypt_option,
            } => {
                let mut v = b"  <encrypt>CUSTOM".to_vec();
                plain_tag(&mut v, "custom-encrypt-program", program);
                v.push(b'\n');
                if let Some(opt) = decrypt_option {
                    v.extend_from_slice(b"    ");
                    plain_tag(&mut v, "decrypt-option", opt);
                    v.push(b'\n');
                }
                v.extend_from_slice(b"  </encrypt>");
                items.push(v);
            }
            Encrypt::ServerCustom {
                program,
                decrypt_option,
            } => {
                if server_encrypt {
                    let mut v = b"  <encrypt>SERVER-CUSTOM".to_vec();
                    plain_tag(&mut v, "custom-encrypt-program", program);
                    // 3.5.1 prints the decrypt option even when unset: "(null)".
                    v.extend_from_slice(b"\n    ");
                    plain_tag(
                        &mut v,
                        "decrypt-option",
                        decrypt_option.as_deref().unwrap_or(b"(null)"),
                    );
                    v.extend_from_slice(b"\n  </encrypt>");
                    items.push(v);
                }
            }
        }
        items.push(if self.record {
            b"  <record>YES</record>".to_vec()
        } else {
            b"  <record>NO</record>".to_vec()
        });
        if self.index {
            items.push(b"  <index>YES</index>".to_vec());
        }
        if self.kencrypt {
            items.push(b"  <kencrypt>YES</kencrypt>".to_vec());
        }
        if client.has(Feature::XML_DATA_PATH) && !ambackupd {
            match &self.data_path {
                None => {}
                Some(DataPath::Amanda) => items.push(b"  <datapath>AMANDA</datapath>".to_vec()),
                Some(DataPath::DirectTcp(list)) if client.has(Feature::XML_DIRECTTCP_LIST) => {
                    let mut v = b"  <datapath>DIRECTTCP".to_vec();
                    if !list.is_empty() {
                        for addr in list {
                            v.extend_from_slice(b"\n    ");
                            v.extend_from_slice(&format_tag("directtcp", addr));
                        }
                        v.extend_from_slice(b"\n  ");
                    }
                    v.extend_from_slice(b"</datapath>");
                    items.push(v);
                }
                Some(DataPath::DirectTcp(_)) => {}
            }
        }
        for (tag, list) in [("exclude", &self.exclude), ("include", &self.include)] {
            if let Some(list) = list {
                let mut v = format!("  <{tag}>\n").into_bytes();
                for f in &list.files {
                    v.extend_from_slice(b"    ");
                    v.extend_from_slice(&format_tag("file", f));
                    v.push(b'\n');
                }
                for l in &list.lists {
                    v.extend_from_slice(b"    ");
                    v.extend_from_slice(&format_tag("list", l));
                    v.push(b'\n');
                }
                if list.optional {
                    v.extend_from_slice(b"    <optional>YES</optional>\n");
                }
                v.extend_from_slice(format!("  </{tag}>").as_bytes());
                items.push(v);
            }
        }
        let mut scripts = Vec::new();
        for script in &self.scripts {
            write_script(&mut scripts, script, client);
        }
        items.push(scripts);
        out.extend_from_slice(&items.join(&b'\n'));
    }
}

/// `xml_estimate`: the estimate list form with `fe_xml_estimatelist`, else the first kind
/// with `fe_xml_estimate`, plus `<calcsize>YES</calcsize>` when that first kind is CALCSIZE.
fn write_estimate(out: &mut Vec<u8>, estimates: &[Estimate], client: &Features) {
    let first = estimates.first().copied().unwrap_or(Estimate::Client);
    if client.has(Feature::XML_ESTIMATELIST) {
        out.extend_from_slice(b"  <estimate>");
        let list: &[Estimate] = if estimates.is_empty() {
            &[Estimate::Client]
        } else {
            estimates
        };
        for e in list {
            out.extend_from_slice(e.keyword().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(b"</estimate>");
    } else {
        if client.has(Feature::XML_ESTIMATE) {
            out.extend_from_slice(format!("  <estimate>{}</estimate>", first.keyword()).as_bytes());
        }
        if first == Estimate::Calcsize {
            out.extend_from_slice(b"  <calcsize>YES</calcsize>");
        }
    }
}

/// `xml_property`: name, optional priority, values on one line, closing tag.
fn write_property(out: &mut Vec<u8>, p: &Property, priority: bool) {
    out.extend_from_slice(b"    <property>\n      ");
    out.extend_from_slice(&format_tag("name", &p.name));
    out.push(b'\n');
    if p.priority && priority {
        out.extend_from_slice(b"      <priority>yes</priority>\n");
    }
    for v in &p.values {
        out.extend_from_slice(b"      ");
        out.extend_from_slice(&format_tag("value", v));
    }
    out.extend_from_slice(b"\n    </property>\n");
}

/// The properties and `client_name` that end an application or script element (the name
/// only for a client with `name_feature`).
fn write_plugin_tail(
    out: &mut Vec<u8>,
    properties: &[Property],
    client_name: Option<&ByteString>,
    name_feature: Feature,
    client: &Features,
) {
    for p in properties {
        write_property(out, p, client.has(Feature::XML_PROPERTY_PRIORITY));
    }
    if let Some(name) = client_name.filter(|n| !n.is_empty())
        && client.has(name_feature)
    {
        out.extend_from_slice(b"    ");
        out.extend_from_slice(&format_tag("client_name", name));
        out.push(b'\n');
    }
}

/// `xml_application`.
fn write_application(out: &mut Vec<u8>, a: &Application, client: &Features) {
    out.extend_from_slice(b"  <backup-program>\n    ");
    out.extend_from_slice(&format_tag("plugin", &a.plugin));
    out.push(b'\n');
    write_plugin_tail(
        out,
        &a.properties,
        a.client_name.as_ref(),
        Feature::APPLICATION_CLIENT_NAME,
        client,
    );
    out.extend_from_slice(b"  </backup-program>\n");
}

/// `xml_scripts` for one script.
fn write_script(out: &mut Vec<u8>, s: &Script, client: &Features) {
    out.extend_from_slice(b"  <script>\n    ");
    out.extend_from_slice(&format_tag("plugin", &s.plugin));
    out.extend_from_slice(b"\n    <execute_where>");
    out.extend_from_slice(match s.execute_where {
        ExecuteWhere::Client => b"CLIENT",
        ExecuteWhere::Server => b"SERVER",
    });
    out.extend_from_slice(b"</execute_where>\n");
    if !s.execute_on.is_empty() {
        out.extend_from_slice(b"    ");
        plain_tag(out, "execute_on", &s.execute_on.join(&b','));
        out.push(b'\n');
    }
    write_plugin_tail(
        out,
        &s.properties,
        s.client_name.as_ref(),
        Feature::SCRIPT_CLIENT_NAME,
        client,
    );
    out.extend_from_slice(b"  </script>\n");
}
