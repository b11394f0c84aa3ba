//! Conversions between formats through mappings: an ISO 8583 message to XML, JSON,
//! fixed-width and delimited records and back.

use openteller_codec::mapping::Mapping;
use openteller_codec::{FieldValue, Format, Message, Spec};

const XML: &str = r#"
kind = "xml"
name = "branch"
root = "Txn"
[[field]]
name = "type"
path = "@type"
[[field]]
name = "pan"
path = "Card/PAN"
[[field]]
name = "amount"
path = "Amount"
[[field]]
name = "batch"
path = "Batch"
[[field]]
name = "arqc"
path = "Icc/@arqc"
"#;

const TO_XML: &str = r#"
name = "cup-to-branch"
[[map]]
from = "mti"
to = "type"
[[map]]
from = "2"
to = "pan"
[[map]]
from = "4"
to = "amount"
transform = "minor_to_decimal"
[[map]]
from = "60.2"
to = "batch"
[[map]]
from = "55.9F26"
to = "arqc"
"#;

const FROM_XML: &str = r#"
name = "branch-to-cup"
[[map]]
from = "type"
to = "mti"
[[map]]
to = "tpdu"
constant = "6000030000"
[[map]]
to = "header"
constant = "603100000000"
[[map]]
from = "pan"
to = "2"
[[map]]
from = "amount"
to = "4"
transform = "decimal_to_minor"
width = 12
[[map]]
to = "60.1"
constant = "22"
[[map]]
from = "batch"
to = "60.2"
[[map]]
from = "arqc"
to = "55.9F26"
"#;

#[test]
fn cup_to_xml_and_back() {
    let cup = Format::Iso8583(Spec::builtin("cup").unwrap());
    let xml = Format::from_toml_str(XML, "branch").unwrap();
    let msg = Message::new("0200")
        .with_tpdu(vec![0x60, 0, 3, 0, 0])
        .with_header(vec![0x60, 0x31, 0, 0, 0, 0])
        .with(2, "6222021234567890123")
        .with(4, "000000012345")
        .with(55, FieldValue::subfields([("9F26", vec![0x11u8; 8])]))
        .with(60, FieldValue::subfields([("1", "22"), ("2", "000042")]));
    let wire = Spec::builtin("cup").unwrap().encode(&msg).unwrap();

    let to_xml = Mapping::from_toml_str(TO_XML, "m").unwrap();
    let doc = to_xml.convert(&cup, &xml, &wire).unwrap();
    assert_eq!(
        String::from_utf8(doc.clone()).unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Txn type=\"0200\"><Card><PAN>6222021234567890123</PAN></Card><Amount>123.45</Amount><Batch>000042</Batch><Icc arqc=\"1111111111111111\"/></Txn>"
    );

    let from_xml = Mapping::from_toml_str(FROM_XML, "m").unwrap();
    let back = from_xml.convert(&xml, &cup, &doc).unwrap();
    assert_eq!(back, wire);
}

#[test]
fn fixed_delimited_json_round_trip() {
    let fixed = Format::from_toml_str(
        "kind = \"fixed\"\nname = \"f\"\n[[field]]\nname = \"a\"\nwidth = 3\n[[field]]\nname = \"b\"\nwidth = 5\nalign = \"right\"\npad = \"0\"\n",
        "f",
    )
    .unwrap();
    let delim = Format::from_toml_str(
        "kind = \"delimited\"\nname = \"d\"\nseparator = \",\"\n[[field]]\nname = \"a\"\n[[field]]\nname = \"b\"\n",
        "d",
    )
    .unwrap();
    let json = Format::from_toml_str(
        "kind = \"json\"\nname = \"j\"\n[[field]]\nname = \"a\"\npath = \"x.a\"\n[[field]]\nname = \"b\"\ntype = \"number\"\n",
        "j",
    )
    .unwrap();
    let r = fixed.decode_record(b"ab 00042").unwrap();
    let d = delim.encode_record(&r).unwrap();
    assert_eq!(d, b"ab,42");
    let j = json
        .encode_record(&delim.decode_record(&d).unwrap())
        .unwrap();
    assert_eq!(j, br#"{"b":42,"x":{"a":"ab"}}"#);
    assert_eq!(
        fixed
            .encode_record(&json.decode_record(&j).unwrap())
            .unwrap(),
        b"ab 00042"
    );
    assert_eq!(
        Format::from_toml_str("kind = \"csv\"\nname = \"x\"", "x")
            .unwrap_err()
            .code(),
        "CODEC_BAD_SPEC"
    );
}
