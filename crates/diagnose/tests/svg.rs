//! The SVG report on the recorded examples in `examples/`: it must be well-formed XML, show every
//! hop and finding, colour each hop by the worst finding there, label a Service's fan-out with
//! each branch's share, match a reviewed golden file, and be drawable by a real SVG renderer
//! (librsvg's `rsvg-convert`, installed by `scripts/install-deps.sh`).
//!
//! `UPDATE_GOLDEN=1 cargo test -p diagnose --test svg` rewrites the golden file after a
//! deliberate change; look at it (and its PNG) before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

use diagnose::render::{render, Format};
use diagnose::Query;
use model::diagnosis::Diagnosis;
use model::Snapshot;
use netstack::packet::Protocol;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn diagnosis(example: &str, src: &str, dst: &str, port: u16) -> Diagnosis {
    let path = repo().join(format!("examples/flannel-host-gw/{example}.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let snapshot = Snapshot::from_bytes(&path.display().to_string(), &bytes).expect("example");
    let query = Query {
        src: src.into(),
        dst: dst.into(),
        protocol: Protocol::Tcp,
        dport: port,
        sport: 40000,
    };
    diagnose::diagnose(&snapshot, &query).expect("diagnosis")
}

fn blocked() -> Diagnosis {
    diagnosis(
        "forward-drop-hand-added",
        "default/web-1-1",
        "default/web-2-1",
        8080,
    )
}

/// The `<rect>` of the hop box for `netns` (the first, if the netns is visited twice).
fn hop_rect<'a>(doc: &'a roxmltree::Document<'a>, netns: &str) -> roxmltree::Node<'a, 'a> {
    let hop = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("hop") && n.attribute("data-netns") == Some(netns))
        .unwrap_or_else(|| panic!("no box for {netns}"));
    hop.children()
        .find(|n| n.has_tag_name("rect"))
        .expect("box rect")
}

fn texts<'a>(node: roxmltree::Node<'a, 'a>) -> Vec<&'a str> {
    node.descendants().filter_map(|n| n.text()).collect()
}

#[test]
fn blocked_path_is_well_formed_xml_with_every_hop_the_finding_and_red_where_it_stops() {
    let d = blocked();
    let svg = render(&d, Format::Svg);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for hop in d.paths.iter().flat_map(|p| &p.hops) {
        hop_rect(&doc, &hop.netns);
    }
    // The drop is in node-2's FORWARD chain: that box is red, the source's green.
    let stopped = hop_rect(&doc, "node-2");
    assert_eq!(stopped.attribute("fill"), Some("#fdecea"));
    assert_eq!(stopped.attribute("stroke"), Some("#c62828"));
    let source = hop_rect(&doc, "node-1/default/web-1-1");
    assert_eq!(source.attribute("fill"), Some("#eef7ee"));
    let node2 = stopped.parent().expect("hop group");
    assert_eq!(node2.attribute("data-level"), Some("error"));
    assert!(
        texts(node2)
            .iter()
            .any(|t| t.contains("stopped: netfilter.drop")),
        "{:?}",
        texts(node2)
    );
    let finding = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("finding"))
        .expect("finding listed");
    assert_eq!(finding.attribute("data-code"), Some("netfilter.drop"));
    assert_eq!(finding.attribute("data-level"), Some("error"));
    let finding_text = texts(finding).join("\n");
    assert!(
        finding_text.contains("filter/FORWARD rule #2, line 32"),
        "{finding_text}"
    );
    assert!(
        finding_text.contains("iptables -t filter -D FORWARD"),
        "{finding_text}"
    );
    let legend: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("legend"))
        .filter_map(|n| n.attribute("data-level"))
        .collect();
    assert_eq!(legend, ["no finding", "info", "warning", "error", "fatal"]);
    assert!(texts(root).contains(&"BLOCKED"));

    let golden = repo().join("crates/diagnose/tests/svg/forward-drop-hand-added.svg");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &svg).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden SVG");
    assert_eq!(svg, expected, "SVG changed (UPDATE_GOLDEN=1 to accept)");
}

#[test]
fn service_fan_out_labels_each_branch_share_and_draws_replies_dashed() {
    let d = diagnosis(
        "healthy-pod-to-service",
        "default/web-1-1",
        "service/default/web-0",
        80,
    );
    let svg = render(&d, Format::Svg);
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let shares: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .filter_map(|n| n.text())
        .filter(|t| t.ends_with('%'))
        .collect();
    assert_eq!(shares.len(), 2, "one label per endpoint: {shares:?}");
    assert!(shares.iter().all(|s| s.ends_with("50.0%")), "{shares:?}");
    let group = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("g") && n.attribute("class") == Some(name))
            .unwrap_or_else(|| panic!("no {name} group"))
    };
    let arrows = |g: roxmltree::Node<'_, '_>| -> Vec<bool> {
        g.children()
            .filter(|n| n.has_tag_name("path"))
            .map(|n| n.attribute("stroke-dasharray").is_some())
            .collect()
    };
    let (forward, reply) = (arrows(group("forward")), arrows(group("reply")));
    assert!(!forward.is_empty() && forward.iter().all(|dashed| !dashed));
    assert!(!reply.is_empty() && reply.iter().all(|dashed| *dashed));
    // Delivered with no finding: every box in the no-finding colour, and "none" listed.
    assert!(doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("hop"))
        .all(|n| n.attribute("data-level") == Some("no finding")));
    assert!(texts(doc.root_element()).contains(&"DELIVERED"));
}

/// Removes the directory when the test ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn librsvg_draws_it_at_its_declared_size() {
    let dir = TempDir(std::env::temp_dir().join(format!("netsleuth-svg-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let svg = render(&blocked(), Format::Svg);
    let (svg_path, png_path) = (dir.0.join("report.svg"), dir.0.join("report.png"));
    std::fs::write(&svg_path, &svg).expect("write svg");
    let out = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png_path)
        .arg(&svg_path)
        .output()
        .expect("rsvg-convert (librsvg2-bin; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "rsvg-convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&png_path).expect("png written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, right after the signature and chunk header.
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    let doc = roxmltree::Document::parse(&svg).expect("xml");
    let declared = |attr: &str| -> u32 {
        doc.root_element()
            .attribute(attr)
            .and_then(|v| v.parse::<f64>().ok())
            .expect("numeric size") as u32
    };
    assert_eq!(
        (size(16), size(20)),
        (declared("width"), declared("height"))
    );
}
