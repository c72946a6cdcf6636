//! Arrow tables the SQL models read: `proposals`, `observations`, `products`, `settings`,
//! `summaries` (built by [`crate::summaries::table`]), and the `skips` table every stage
//! appends to.
//!
//! Identifiers are BIGINT (MAST obsids exceed 32 bits); missing values are NULL, never NaN.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use paperclip_archive::{Observation, Product};
use paperclip_catalog::Proposal;
use paperclip_catalog::caption;

use super::config::PipelineConfig;
use super::skips::Skip;

/// Tables the pipeline registers before the models run; a model cannot reuse these names.
pub const INPUT_TABLES: [&str; 5] = [
    "proposals",
    "observations",
    "products",
    "settings",
    "summaries",
];

fn batch(fields: Vec<(&str, DataType, bool)>, columns: Vec<ArrayRef>) -> RecordBatch {
    let schema = Schema::new(
        fields
            .into_iter()
            .map(|(name, data_type, nullable)| Field::new(name, data_type, nullable))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the declared schema")
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn optional_strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

pub fn proposals_batch(proposals: &[Proposal]) -> RecordBatch {
    let repairs: Vec<Option<String>> = proposals
        .iter()
        .map(|p| {
            (!p.text_repairs.is_empty()).then(|| {
                p.text_repairs
                    .iter()
                    .map(|r| format!("{}: {} ({})", r.field, r.kind.code(), r.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .collect();
    let paper: Vec<String> = proposals.iter().map(caption::paper_caption).collect();
    let clean: Vec<String> = proposals.iter().map(caption::clean_caption).collect();

    batch(
        vec![
            ("proposal_id", DataType::Int64, false),
            ("cycle", DataType::Int64, false),
            ("proposal_type", DataType::Utf8, false),
            ("category", DataType::Utf8, false),
            ("title", DataType::Utf8, false),
            ("pi", DataType::Utf8, false),
            ("abstract_raw", DataType::Utf8, false),
            ("caption_paper", DataType::Utf8, false),
            ("caption_clean", DataType::Utf8, false),
            ("text_repairs", DataType::Utf8, true),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(
                proposals.iter().map(|p| i64::from(p.id)),
            )),
            Arc::new(Int64Array::from_iter_values(
                proposals.iter().map(|p| i64::from(p.cycle)),
            )),
            strings(proposals.iter().map(|p| p.proposal_type.as_str())),
            strings(proposals.iter().map(|p| p.category.as_str())),
            strings(proposals.iter().map(|p| p.title.as_str())),
            strings(proposals.iter().map(|p| p.pi.as_str())),
            strings(proposals.iter().map(|p| p.abstract_raw.as_str())),
            strings(paper.iter().map(String::as_str)),
            strings(clean.iter().map(String::as_str)),
            optional_strings(repairs.iter().map(Option::as_deref)),
        ],
    )
}

pub fn observations_batch(observations: &[Observation]) -> RecordBatch {
    batch(
        vec![
            ("obsid", DataType::Int64, false),
            ("obs_id", DataType::Utf8, false),
            ("proposal_id", DataType::Int64, false),
            ("obs_collection", DataType::Utf8, false),
            ("instrument_name", DataType::Utf8, true),
            ("target_name", DataType::Utf8, true),
            ("filters", DataType::Utf8, true),
            ("dataproduct_type", DataType::Utf8, true),
            ("calib_level", DataType::Int64, true),
            ("t_min", DataType::Float64, true),
            ("t_exptime", DataType::Float64, true),
            ("t_obs_release", DataType::Float64, true),
            ("s_ra", DataType::Float64, true),
            ("s_dec", DataType::Float64, true),
            ("obs_title", DataType::Utf8, true),
            ("proposal_pi", DataType::Utf8, true),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(
                observations.iter().map(|o| o.obsid.get() as i64),
            )),
            strings(observations.iter().map(|o| o.obs_id.as_str())),
            Arc::new(Int64Array::from_iter_values(
                observations.iter().map(|o| i64::from(o.proposal_id)),
            )),
            strings(observations.iter().map(|o| o.obs_collection.as_str())),
            optional_strings(observations.iter().map(|o| o.instrument_name.as_deref())),
            optional_strings(observations.iter().map(|o| o.target_name.as_deref())),
            optional_strings(observations.iter().map(|o| o.filters.as_deref())),
            optional_strings(observations.iter().map(|o| o.dataproduct_type.as_deref())),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.calib_level)
                    .collect::<Int64Array>(),
            ),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.t_min)
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.t_exptime)
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.t_obs_release)
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.s_ra)
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                observations
                    .iter()
                    .map(|o| o.s_dec)
                    .collect::<Float64Array>(),
            ),
            optional_strings(observations.iter().map(|o| o.obs_title.as_deref())),
            optional_strings(observations.iter().map(|o| o.proposal_pi.as_deref())),
        ],
    )
}

pub fn products_batch(products: &[Product]) -> RecordBatch {
    batch(
        vec![
            ("obsid", DataType::Int64, false),
            ("parent_obsid", DataType::Int64, false),
            ("obs_id", DataType::Utf8, false),
            ("data_uri", DataType::Utf8, false),
            ("product_type", DataType::Utf8, false),
            ("product_subgroup", DataType::Utf8, true),
            ("product_filename", DataType::Utf8, false),
            ("size_bytes", DataType::Int64, true),
            ("description", DataType::Utf8, true),
        ],
        vec![
            Arc::new(Int64Array::from_iter_values(
                products.iter().map(|p| p.obsid.get() as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                products.iter().map(|p| p.parent_obsid.get() as i64),
            )),
            strings(products.iter().map(|p| p.obs_id.as_str())),
            strings(products.iter().map(|p| p.data_uri.as_str())),
            strings(products.iter().map(|p| p.product_type.as_str())),
            optional_strings(products.iter().map(|p| p.product_subgroup.as_deref())),
            strings(products.iter().map(|p| p.product_filename.as_str())),
            Arc::new(
                products
                    .iter()
                    .map(|p| p.size_bytes.map(|s| s as i64))
                    .collect::<Int64Array>(),
            ),
            optional_strings(products.iter().map(|p| p.description.as_deref())),
        ],
    )
}

pub fn settings_batch(config: &PipelineConfig) -> RecordBatch {
    let selection = &config.selection;
    batch(
        vec![
            ("seed", DataType::Int64, false),
            ("max_images_per_proposal", DataType::Int64, false),
            ("val_fraction", DataType::Float64, false),
            ("fits_fallback", DataType::Boolean, false),
            ("caption_form", DataType::Utf8, false),
            ("min_cycle", DataType::Int64, false),
            ("max_cycle", DataType::Int64, false),
        ],
        vec![
            Arc::new(Int64Array::from(vec![selection.seed as i64])),
            Arc::new(Int64Array::from(vec![i64::from(
                selection.max_images_per_proposal,
            )])),
            Arc::new(Float64Array::from(vec![selection.val_fraction])),
            Arc::new(BooleanArray::from(vec![selection.fits_fallback])),
            strings(std::iter::once(config.captions.form.as_str())),
            Arc::new(Int64Array::from(vec![i64::from(selection.min_cycle)])),
            Arc::new(Int64Array::from(vec![i64::from(selection.max_cycle)])),
        ],
    )
}

pub fn skips_batch(skips: &[Skip]) -> RecordBatch {
    batch(
        vec![
            ("stage", DataType::Utf8, false),
            ("item", DataType::Utf8, false),
            ("proposal_id", DataType::Int64, true),
            ("reason", DataType::Utf8, false),
            ("detail", DataType::Utf8, false),
        ],
        vec![
            strings(skips.iter().map(|s| s.stage)),
            strings(skips.iter().map(|s| s.item.as_str())),
            Arc::new(skips.iter().map(|s| s.proposal_id).collect::<Int64Array>()),
            strings(skips.iter().map(|s| s.reason.as_str())),
            strings(skips.iter().map(|s| s.detail.as_str())),
        ],
    )
}
