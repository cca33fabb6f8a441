#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn fields(attribute: &str, operator: &str, value: &str) -> ConstraintFields {
    ConstraintFields {
        attribute: attribute.into(),
        operator: operator.into(),
        value: value.into(),
    }
}

/// The compiled test of `${attr.x} OP value`.
fn test(op: &str, value: &str) -> Test {
    match Constraint::new(fields("${attr.x}", op, value))
        .unwrap()
        .rule
    {
        Rule::Node { test, .. } => test,
        other => panic!("{op}: {other:?}"),
    }
}

fn holds(op: &str, value: &str, node: Option<&str>) -> bool {
    test(op, value).matches(node)
}

#[test]
fn equality_is_exact_and_default() {
    assert!(holds("", "arm64", Some("arm64")));
    assert!(holds("=", "arm64", Some("arm64")));
    assert!(holds("==", "arm64", Some("arm64")));
    assert!(!holds("=", "arm64", Some("amd64")));
    assert!(!holds("=", "arm64", None));
    // Strings, not numbers.
    assert!(!holds("=", "1", Some("1.0")));
    assert!(holds("!=", "arm64", Some("amd64")));
    assert!(!holds("!=", "arm64", Some("arm64")));
    // An unset property is different from any value.
    assert!(holds("!=", "arm64", None));
}

#[test]
fn order_is_numeric_when_both_sides_are_numbers() {
    // 10 > 9 as numbers, though "10" < "9" as strings.
    assert!(holds(">", "9", Some("10")));
    assert!(!holds("<", "9", Some("10")));
    assert!(holds(">=", "8", Some("8.0")));
    assert!(holds("<=", "8", Some("8")));
    assert!(!holds("<", "8", Some("8")));
    assert!(holds("<", "2.5", Some("-1")));
    assert!(holds(">", "1e3", Some("1001")));
    assert!(!holds(">", "1", None));
}

#[test]
fn order_is_lexical_otherwise() {
    assert!(holds("<", "r2", Some("r10")), "\"r10\" < \"r2\" byte-wise");
    assert!(holds(">", "b", Some("c")));
    assert!(holds(">=", "b", Some("b")));
    assert!(!holds(">", "b", Some("a")));
    // One side a number, the other not: strings.
    assert!(holds("<", "abc", Some("10")));
    // Not-a-number spellings Rust would parse are strings here.
    assert!(holds(">", "5", Some("nan")), "\"nan\" > \"5\" byte-wise");
}

#[test]
fn regexp_matches_unanchored_and_is_compiled_once() {
    let t = test("regexp", "^r[12]$");
    assert!(t.matches(Some("r1")));
    assert!(!t.matches(Some("r3")));
    assert!(!t.matches(None));
    assert!(holds("regexp", "ssd", Some("nvme-ssd-1")));
    let e = Constraint::new(fields("${attr.x}", "regexp", "a(")).unwrap_err();
    assert!(e.to_string().contains("not a regular expression"), "{e}");
    // Compiles far past the size limit: refused, not built.
    let e = Constraint::new(fields("${attr.x}", "regexp", "\\w{1000}\\w{1000}")).unwrap_err();
    assert!(e.to_string().contains("not a regular expression"), "{e}");
}

#[test]
fn version_compares_kernels_sensibly() {
    let t = test("version", ">= 6.1, < 7");
    assert!(t.matches(Some("6.1.0-28-amd64")));
    assert!(t.matches(Some("6.12.3")));
    assert!(!t.matches(Some("5.15.0-91-generic")));
    assert!(!t.matches(Some("7.0")));
    assert!(!t.matches(Some("unknown")));
    assert!(!t.matches(None));
    let e = Constraint::new(fields("${attr.kernel.version}", "version", ">= six")).unwrap_err();
    assert!(e.to_string().contains("\">= six\""), "{e}");
}

#[test]
fn set_contains_needs_every_item() {
    let t = test("set_contains", "avx2, sse4");
    assert!(t.matches(Some("sse4,avx2,aes")));
    assert!(t.matches(Some("sse4, avx2")));
    assert!(!t.matches(Some("avx2")));
    assert!(!t.matches(Some("avx2x,sse4")), "items, not substrings");
    assert!(!t.matches(None));
    assert!(Constraint::new(fields("${attr.x}", "set_contains", " , ")).is_err());
}

#[test]
fn is_set_and_is_not_set() {
    assert!(holds("is_set", "", Some("")));
    assert!(holds("is_set", "", Some("x")));
    assert!(!holds("is_set", "", None));
    assert!(holds("is_not_set", "", None));
    assert!(!holds("is_not_set", "", Some("x")));
    let e = Constraint::new(fields("${attr.x}", "is_set", "yes")).unwrap_err();
    assert!(e.to_string().contains("takes no value"), "{e}");
}

#[test]
fn distinct_operators() {
    let c = Constraint::new(fields("", "distinct_hosts", "")).unwrap();
    assert!(matches!(c.rule, Rule::DistinctHosts));
    assert!(Constraint::new(fields("", "distinct_hosts", "true")).is_ok());
    assert!(Constraint::new(fields("${node.id}", "distinct_hosts", "")).is_err());
    let c = Constraint::new(fields("${meta.rack}", "distinct_property", "")).unwrap();
    assert!(matches!(c.rule, Rule::DistinctProperty { limit: 1, .. }));
    let c = Constraint::new(fields("${meta.rack}", "distinct_property", "3")).unwrap();
    assert!(matches!(c.rule, Rule::DistinctProperty { limit: 3, .. }));
    for bad in ["0", "-1", "x"] {
        assert!(Constraint::new(fields("${meta.rack}", "distinct_property", bad)).is_err());
    }
    let e = Constraint::new(fields("", "distinct_property", "")).unwrap_err();
    assert!(e.to_string().contains("needs an attribute"), "{e}");
}

#[test]
fn malformed_constraints_say_what_is_wrong() {
    for (f, says) in [
        (fields("arch", "=", "x"), "not a node property"),
        (
            fields("${attr.arch}", "~=", "x"),
            "operator \"~=\" is not one of",
        ),
        (fields("${attr.arch}", "=", ""), "needs a value"),
        (fields("", "=", "x"), "needs an attribute"),
        (fields("${attr.a}", "=", &"x".repeat(2000)), "at most 1024"),
    ] {
        let e = Constraint::new(f.clone()).unwrap_err().to_string();
        assert!(e.contains(says), "{f:?}: {e}");
    }
}

#[test]
fn constraints_round_trip_through_json_and_print() {
    let c = Constraint::new(fields("${attr.arch}", "", "arm64")).unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(json, r#"{"attribute":"${attr.arch}","value":"arm64"}"#);
    let back: Constraint = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    assert_eq!(c.to_string(), "${attr.arch} = arm64");
    assert!(serde_json::from_str::<Constraint>(r#"{"attribute":"x"}"#).is_err());
    let d = Constraint::new(fields("", "distinct_hosts", "")).unwrap();
    assert_eq!(d.to_string(), "distinct_hosts");
}

#[test]
fn affinities_take_node_tests_and_a_weight() {
    let a = Affinity::new(AffinityFields {
        on: fields("${meta.rack}", "", "r1"),
        weight: 50,
    })
    .unwrap();
    assert!(a.test.matches(Some("r1")));
    assert_eq!(a.weight, 50);
    assert_eq!(a.to_string(), "${meta.rack} = r1 (weight 50)");
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<Affinity>(&json).unwrap(), a);
    for w in [0, 101, -101] {
        let e = Affinity::new(AffinityFields {
            on: fields("${meta.rack}", "", "r1"),
            weight: w,
        })
        .unwrap_err();
        assert!(e.to_string().contains("weight"), "{e}");
    }
    let e = Affinity::new(AffinityFields {
        on: fields("", "distinct_hosts", ""),
        weight: 10,
    })
    .unwrap_err();
    assert!(e.to_string().contains("not affinities"), "{e}");
}
