//! Field-by-field diagnosis of a cron expression that the cron parser rejected, so the
//! error names the field, the bad value and its allowed range instead of the parser's
//! internal wording.

use crate::sql::graph::closest;

const NICKNAMES: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field of a five-field expression: its name, range and value names.
struct FieldRule {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [FieldRule; 5] = [
    FieldRule {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldRule {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldRule {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldRule {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    FieldRule {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &DAYS,
    },
];

/// Describes the mistake in `expression`, when a simple rule finds one.
pub fn diagnose(expression: &str) -> Option<String> {
    let expression = expression.trim();
    if expression.is_empty() {
        return Some("the expression is empty".into());
    }
    if expression.starts_with('@') {
        let lower = expression.to_ascii_lowercase();
        if NICKNAMES.contains(&lower.as_str()) {
            return None;
        }
        let hint = closest(&lower, &NICKNAMES)
            .map(|name| format!("; did you mean {name}?"))
            .unwrap_or_else(|| format!("; known nicknames: {}", NICKNAMES.join(", ")));
        return Some(format!("{expression} is not a cron nickname{hint}"));
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "it has {} fields, a cron expression has 5",
            fields.len()
        ));
    }
    fields
        .iter()
        .zip(&FIELDS)
        .find_map(|(text, rule)| check_field(text, rule))
}

fn check_field(text: &str, rule: &FieldRule) -> Option<String> {
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step
            && step.parse::<u32>().map_or(true, |s| s == 0)
        {
            return Some(format!(
                "{} field {text:?}: step {step:?} is not a whole number of at least 1",
                rule.name
            ));
        }
        if range == "*" || range == "?" {
            continue;
        }
        let bounds: Vec<&str> = range.splitn(2, '-').collect();
        for value in bounds {
            if let Some(problem) = check_value(value, rule) {
                return Some(format!("{} field {text:?}: {problem}", rule.name));
            }
        }
    }
    None
}

fn check_value(value: &str, rule: &FieldRule) -> Option<String> {
    let (min, max) = (rule.min, rule.max);
    if let Ok(number) = value.parse::<u32>() {
        return (number < min || number > max).then(|| format!("{number} is outside {min}-{max}"));
    }
    let upper = value.to_ascii_uppercase();
    if rule.names.contains(&upper.as_str()) {
        return None;
    }
    if rule.names.is_empty() {
        return Some(format!("{value:?} is not a number in {min}-{max}"));
    }
    let hint = closest(&upper, rule.names)
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default();
    Some(format!(
        "{value:?} is neither a number in {min}-{max} nor a name ({}){hint}",
        rule.names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_range() {
        assert_eq!(
            diagnose("61 * * * *").unwrap(),
            "minute field \"61\": 61 is outside 0-59"
        );
        assert!(
            diagnose("0 3 * * MON-FRY")
                .unwrap()
                .contains("did you mean FRI?")
        );
        assert!(diagnose("@dayly").unwrap().contains("did you mean @daily?"));
        assert_eq!(
            diagnose("0 3 * *").unwrap(),
            "it has 4 fields, a cron expression has 5"
        );
        assert!(diagnose("*/0 * * * *").unwrap().contains("step"));
    }

    #[test]
    fn valid_expressions_have_no_diagnosis() {
        for expression in [
            "0 3 * * *",
            "*/15 1-3 * JAN-MAR mon-fri",
            "@daily",
            "0 0 1,15 * 7",
        ] {
            assert_eq!(diagnose(expression), None, "{expression}");
        }
    }
}
