//! Suggestions for misspelt names: the closest known name by edit distance.

/// Returns the known name closest to `name` by edit distance, when it is close enough to be
/// a likely typo (at most a third of the name's length).
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance > 0 && *distance <= name.len().max(3) / 3)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Adds the closest valid name to a TOML "unknown field" error, when one is close enough
/// to be a likely typo: `unknown field `keep_lst`, expected one of `keep_last`, ...` gets
/// `; did you mean `keep_last`?`. Other messages are returned unchanged.
pub fn suggest_known_field(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(unknown, &known) {
        Some(name) => format!("{}; did you mean `{name}`?", message.trim_end()),
        None => message.to_string(),
    }
}

/// Replaces the Rust type names of a TOML type error (`expected u8`) with what to write
/// (`expected a whole number from 0 to 255`).
pub fn plain_type_names(message: &str) -> String {
    const NAMES: [(&str, &str); 9] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number from 0 up"),
        ("expected usize", "expected a whole number from 0 up"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected struct ", "expected a table, named "),
    ];
    let mut plain = message.to_string();
    for (rust, words) in NAMES {
        plain = plain.replace(rust, words);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_what_to_write() {
        let message = "invalid value: integer `300`, expected u8";
        assert_eq!(
            plain_type_names(message),
            "invalid value: integer `300`, expected a whole number from 0 to 255"
        );
        assert_eq!(
            plain_type_names("invalid type: string \"x\", expected u64"),
            "invalid type: string \"x\", expected a whole number from 0 up"
        );
    }

    #[test]
    fn closest_name_needs_a_small_distance() {
        assert_eq!(
            closest("prodcts", &["products", "proposals"]),
            Some("products")
        );
        assert_eq!(closest("zzz", &["products"]), None);
    }

    #[test]
    fn unknown_field_gets_the_closest_name() {
        let message = "TOML parse error at line 3, column 1\nunknown field `max_image_per_proposal`, \
                       expected one of `min_cycle`, `max_images_per_proposal`, `seed`\n";
        assert!(
            suggest_known_field(message).ends_with("did you mean `max_images_per_proposal`?"),
            "{}",
            suggest_known_field(message)
        );
        let far = "unknown field `zzz`, expected one of `min_cycle`, `seed`";
        assert_eq!(suggest_known_field(far), far);
        assert_eq!(suggest_known_field("invalid type"), "invalid type");
    }
}
