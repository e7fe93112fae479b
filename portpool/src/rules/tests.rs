//! Rule generation on a hand-built site (the integration tests feed the output to nft).

use super::*;
use crate::site::{Client, Setting, SiteDle};

/// A server 198.18.0.1 with a bsd client and a bsdtcp client.
pub(crate) fn two_client_site() -> Site {
    let mut site = Site::new("daily");
    site.server_name = "backup".into();
    site.server_addresses = vec!["198.18.0.1".parse().unwrap()];
    site.server.reserved_udp = Setting::default_value(PortRange::new(850, 859).unwrap());
    site.dles = vec![
        SiteDle::new("alpha", "/", Auth::Bsd),
        SiteDle::new("beta", "/", Auth::Bsdtcp),
    ];
    site.clients = vec![
        Client::new(
            "alpha",
            ["198.18.0.2", "2001:db8::2"].map(|a| a.parse().unwrap()),
        ),
        Client::new("beta", ["198.18.0.3".parse().unwrap()]),
    ];
    site
}

#[test]
fn server_rules_open_each_auths_flows_from_the_configured_ranges() {
    let text = render(&two_client_site(), Format::Nft, &Side::Server).unwrap();
    assert!(
        text.contains("ip daddr 198.18.0.2 udp sport 850-859 udp dport 10080 accept"),
        "{text}"
    );
    assert!(text.contains("ip6 daddr 2001:db8::2 udp sport 850-859 udp dport 10080 accept"));
    assert!(text.contains("ip daddr 198.18.0.3 tcp sport 512-1023 tcp dport 10080 accept"));
    assert!(text.contains("ct helper set \"amanda\""));
    assert!(text.contains("type \"amanda\" protocol udp"));
    assert!(
        text.contains("tcp dport 50000-50100"),
        "bsd data streams to the client's unreserved ports"
    );
    assert!(!text.contains("table inet amanda_rs_client"));
}

#[test]
fn client_rules_accept_only_the_server_on_10080() {
    let text = render(
        &two_client_site(),
        Format::Nft,
        &Side::Client("beta".into()),
    )
    .unwrap();
    assert!(
        text.contains("ip saddr 198.18.0.1 tcp sport 512-1023 tcp dport 10080 accept"),
        "{text}"
    );
    assert!(text.contains("tcp dport 10080 drop"));
    assert!(
        !text.contains("udp dport 10080 drop"),
        "beta speaks bsdtcp only"
    );
    assert!(text.contains("restore"));
}

#[test]
fn iptables_format_has_the_helper_in_raw_and_ipv4_rules_only() {
    let text = render(&two_client_site(), Format::Iptables, &Side::Server).unwrap();
    assert!(text.contains(
        "*raw\n-A OUTPUT -d 198.18.0.2/32 -p udp -m udp --dport 10080 -j CT --helper amanda"
    ));
    assert!(text.contains("--sport 850:859 --dport 10080"));
    assert!(text.contains("# IPv6 peers need the same rules in ip6tables: 2001:db8::2"));
    assert_eq!(text.matches("COMMIT").count(), 2);
}

#[test]
fn unknown_addresses_are_an_error_not_missing_rules() {
    let mut site = two_client_site();
    site.clients[1].addresses.clear();
    assert!(
        render(&site, Format::Nft, &Side::All)
            .unwrap_err()
            .contains("beta")
    );
    let mut site = two_client_site();
    site.server_addresses.clear();
    assert!(
        render(&site, Format::Nft, &Side::All)
            .unwrap_err()
            .contains("--server-address")
    );
    assert!(
        render(
            &two_client_site(),
            Format::Nft,
            &Side::Client("gamma".into())
        )
        .is_err()
    );
}

#[test]
fn default_drop_makes_the_table_the_whole_input_firewall() {
    let site = two_client_site();
    let side = Side::Client("alpha".into());
    let opts = Options { default_drop: true };
    let nft = render_with(&site, Format::Nft, &side, &opts).unwrap();
    let input = &nft[nft.find("chain input").unwrap()..nft.find("chain output").unwrap()];
    assert!(input.contains("policy drop;"), "{input}");
    assert!(input.contains("iif \"lo\" accept"));
    assert!(input.contains("ct state established,related accept"));
    let output = &nft[nft.find("chain output").unwrap()..];
    assert!(
        output.contains("policy accept;"),
        "outgoing traffic is left alone"
    );
    let ipt = render_with(&site, Format::Iptables, &side, &opts).unwrap();
    assert!(ipt.contains(":INPUT DROP [0:0]"), "{ipt}");
    assert!(ipt.contains("-A INPUT -i lo -j ACCEPT"));
    let plain = render(&site, Format::Nft, &side).unwrap();
    assert!(!plain.contains("policy drop"), "off by default");
}

#[test]
fn flows_are_the_server_initiated_hops_with_both_sides_rules() {
    let site = two_client_site();
    let alpha = flows(&site, "alpha").unwrap();
    let control = &alpha[0];
    assert_eq!(control.proto, Transport::Udp);
    assert_eq!(control.sport.to_string(), "850-859");
    assert_eq!(control.dport.to_string(), "10080");
    assert!(control.what.contains("control"), "{control:?}");
    assert!(
        control.client_rule[0]
            .starts_with("ip saddr 198.18.0.1 udp sport 850-859 udp dport 10080 accept")
    );
    assert!(
        control.server_rule[0]
            .starts_with("ip daddr 198.18.0.2 udp sport 850-859 udp dport 10080 accept")
    );
    assert!(
        alpha
            .iter()
            .any(|f| f.proto == Transport::Tcp && f.what.contains("data"))
    );
    assert!(alpha.iter().all(|f| !f.what.starts_with("restore")));
    let beta = flows(&site, "beta").unwrap();
    assert_eq!(
        beta.len(),
        1,
        "bsdtcp: the control connection only: {beta:?}"
    );
    assert!(flows(&site, "gamma").is_err());
}

#[test]
fn a_bsdudp_client_gets_no_conntrack_helper_and_says_why() {
    let mut site = two_client_site();
    site.dles[0].auth = Auth::Bsdudp;
    let client = render(&site, Format::Nft, &Side::Client("alpha".into())).unwrap();
    assert!(!client.contains("ct helper"), "{client}");
    assert!(
        client.contains("# no amanda conntrack helper for alpha"),
        "{client}"
    );
    assert!(
        client.contains("tcp sport 50000-50100 tcp dport 50000-50100 accept"),
        "the explicit data rule stays:\n{client}"
    );
    let server = render(&site, Format::Nft, &Side::Server).unwrap();
    assert!(!server.contains("ct helper"), "{server}");
    let ipt = render(&site, Format::Iptables, &Side::Client("alpha".into())).unwrap();
    assert!(!ipt.contains("*raw"), "{ipt}");
}

/// issue 14: a dial-in host is only ever the one connecting, to the server's listener.
#[test]
fn a_dial_in_client_gets_outbound_rules_only_and_the_server_accepts_its_listener_port() {
    let mut site = two_client_site();
    site.dles[1].dialin = true;
    let client = render_with(
        &site,
        Format::Nft,
        &Side::Client("beta".into()),
        &Options { default_drop: true },
    )
    .unwrap();
    assert!(
        client.contains("ip daddr 198.18.0.1 tcp dport 10080 accept"),
        "{client}"
    );
    assert!(
        !client.contains("ip saddr 198.18.0.1 tcp sport 512-1023 tcp dport 10080 accept"),
        "nothing inbound: {client}"
    );
    assert!(client.contains("policy drop"), "{client}");
    assert!(client.contains("beta is dial-in"), "{client}");
    let server = render(&site, Format::Nft, &Side::Server).unwrap();
    assert!(
        server.contains("ip saddr 198.18.0.3 tcp dport 10080 accept"),
        "{server}"
    );
    assert!(
        !server.contains("ip daddr 198.18.0.3 tcp sport 512-1023"),
        "the server never connects to beta: {server}"
    );
    // The bsd client is unchanged.
    assert!(server.contains("ip daddr 198.18.0.2 udp sport 850-859 udp dport 10080 accept"));
}
