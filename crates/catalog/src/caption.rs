//! Caption text built from a proposal, in two forms.
//!
//! - [`CaptionForm::Paper`] reproduces the PAPERCLIP training captions byte for byte:
//!   `format!("Category: {}. {}", category, abstract_raw)`. With the usual leading space of an
//!   `abstracts.cat` abstract this gives `"Category: SOLAR SYSTEM.  A quarter ..."` (two
//!   spaces), and `"Category: .  ..."` when the category is empty.
//! - [`CaptionForm::Clean`] applies these rules, in this order:
//!   1. `{` becomes `(` and `}` becomes `)` in the category and the abstract, because the
//!      catalog writes braces where the prose has parentheses;
//!   2. every run of whitespace (spaces, tabs, line breaks) becomes one space and both ends
//!      are trimmed, in the category and the abstract separately;
//!   3. when the cleaned category is non-empty the caption is `"Category: <category>. "`
//!      followed by the cleaned abstract, otherwise it is the cleaned abstract alone.
//!      An empty cleaned abstract leaves `"Category: <category>."` with no trailing space.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::CatalogError;
use crate::proposal::Proposal;
use crate::text::collapse_whitespace;

/// Caption text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptionForm {
    /// The PAPERCLIP training form, raw text with the category prefix.
    Paper,
    /// Normalized whitespace, parentheses in place of braces, prefix only for a category.
    Clean,
}

impl CaptionForm {
    /// Every form, in the order help text lists them.
    pub const ALL: [CaptionForm; 2] = [CaptionForm::Paper, CaptionForm::Clean];

    /// Returns the name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptionForm::Paper => "paper",
            CaptionForm::Clean => "clean",
        }
    }
}

impl fmt::Display for CaptionForm {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for CaptionForm {
    type Err = CatalogError;

    /// Parses `paper` or `clean`, exactly as [`CaptionForm::as_str`] writes them.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        CaptionForm::ALL
            .into_iter()
            .find(|form| form.as_str() == value)
            .ok_or_else(|| CatalogError::UnknownCaptionForm {
                value: value.to_owned(),
            })
    }
}

/// Builds the caption of `proposal` in the given form.
pub fn caption(proposal: &Proposal, form: CaptionForm) -> String {
    match form {
        CaptionForm::Paper => paper_caption(proposal),
        CaptionForm::Clean => clean_caption(proposal),
    }
}

/// Builds the PAPERCLIP training caption: `"Category: {category}. {abstract_raw}"`.
pub fn paper_caption(proposal: &Proposal) -> String {
    format!("Category: {}. {}", proposal.category, proposal.abstract_raw)
}

/// Builds the normalized caption described in the module docs.
pub fn clean_caption(proposal: &Proposal) -> String {
    let category = clean_text(&proposal.category);
    let abstract_text = clean_text(&proposal.abstract_raw);

    match (category.is_empty(), abstract_text.is_empty()) {
        (true, _) => abstract_text,
        (false, true) => format!("Category: {category}."),
        (false, false) => format!("Category: {category}. {abstract_text}"),
    }
}

fn clean_text(text: &str) -> String {
    let with_parentheses = text.replace('{', "(").replace('}', ")");
    collapse_whitespace(&with_parentheses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(category: &str, abstract_raw: &str) -> Proposal {
        Proposal {
            id: 7340,
            cycle: 7,
            proposal_type: String::new(),
            category: category.to_owned(),
            title: String::new(),
            pi: String::new(),
            abstract_raw: abstract_raw.to_owned(),
            text_repairs: Vec::new(),
            source_line: 1,
        }
    }

    #[test]
    fn paper_caption_keeps_double_space() {
        let proposal = proposal("SOLAR SYSTEM", " A quarter of century");
        assert_eq!(
            paper_caption(&proposal),
            "Category: SOLAR SYSTEM.  A quarter of century"
        );
    }

    #[test]
    fn paper_caption_with_empty_category() {
        let proposal = proposal("", " We will obtain");
        assert_eq!(paper_caption(&proposal), "Category: .  We will obtain");
    }

    #[test]
    fn clean_caption_normalizes() {
        let proposal = proposal(
            "STELLAR EJECTA",
            " example {after the\tCrab}  of an  active pulsar ",
        );
        assert_eq!(
            clean_caption(&proposal),
            "Category: STELLAR EJECTA. example (after the Crab) of an active pulsar"
        );
    }

    #[test]
    fn clean_caption_without_category() {
        let proposal = proposal("  ", " We will obtain");
        assert_eq!(clean_caption(&proposal), "We will obtain");
    }

    #[test]
    fn clean_caption_with_empty_abstract() {
        let proposal = proposal("HOT STARS", "  ");
        assert_eq!(clean_caption(&proposal), "Category: HOT STARS.");
    }

    #[test]
    fn caption_dispatches_on_form() {
        let proposal = proposal("X", " a  b");
        assert_eq!(caption(&proposal, CaptionForm::Paper), "Category: X.  a  b");
        assert_eq!(caption(&proposal, CaptionForm::Clean), "Category: X. a b");
    }

    #[test]
    fn caption_form_parses_names() {
        for form in CaptionForm::ALL {
            assert_eq!(form.as_str().parse::<CaptionForm>(), Ok(form));
            assert_eq!(form.to_string(), form.as_str());
        }
    }

    #[test]
    fn caption_form_rejects_unknown() {
        let error = "Paper".parse::<CaptionForm>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown caption form 'Paper'; expected one of: paper, clean"
        );
    }

    #[test]
    fn caption_form_serde_uses_names() {
        assert_eq!(
            serde_json::to_string(&CaptionForm::Paper).unwrap(),
            "\"paper\""
        );
        let form: CaptionForm = serde_json::from_str("\"clean\"").unwrap();
        assert_eq!(form, CaptionForm::Clean);
    }
}
