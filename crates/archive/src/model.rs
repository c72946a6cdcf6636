//! Typed rows of the two MAST services the pipeline uses.
//!
//! [`Observation`] is a CAOM observation row from `Mast.Caom.Filtered`. Its
//! required columns are `obsid`, `obs_id`, `proposal_id` and
//! `obs_collection`. Every other column may be NULL and is then `None`.
//! [`Product`] is a row of `Mast.Caom.Products`; required columns are `obsID`,
//! `obs_id`, `dataURI`, `productType` and `productFilename`.
//!
//! [`split_products`] checks each product row's parent against the requested
//! obsids. A row whose parent is obsid 0 or an obsid outside the request goes
//! to [`ProductList::quarantined`] with a [`QuarantineReason`], so no product
//! is attached to a made-up observation. Several rows may share one `dataURI` under different
//! observations; all of them are kept because the pipeline deduplicates bytes
//! by content hash.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::envelope::{Row, RowReader};
use crate::ids::{MissionObsId, ObsId};

/// The collection this crate ingests; rows of other collections are dropped.
pub const HST_COLLECTION: &str = "HST";

/// Columns that every `Mast.Caom.Filtered` row must carry.
pub const OBSERVATION_REQUIRED_COLUMNS: &[&str] =
    &["obsid", "obs_id", "proposal_id", "obs_collection"];

/// Columns that every `Mast.Caom.Products` row must carry.
pub const PRODUCT_REQUIRED_COLUMNS: &[&str] = &[
    "obsID",
    "obs_id",
    "dataURI",
    "productType",
    "productFilename",
];

/// One CAOM observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub obsid: ObsId,
    pub obs_id: MissionObsId,
    /// HST proposal (program) id; MAST sends it as a string.
    pub proposal_id: u32,
    pub obs_collection: String,
    pub instrument_name: Option<String>,
    pub target_name: Option<String>,
    pub filters: Option<String>,
    pub dataproduct_type: Option<String>,
    pub calib_level: Option<i64>,
    /// Start time, MJD.
    pub t_min: Option<f64>,
    /// Exposure time, seconds.
    pub t_exptime: Option<f64>,
    /// Date the data became (or becomes) public, MJD. Incremental refreshes query by it.
    pub t_obs_release: Option<f64>,
    /// Right ascension, degrees; `None` when MAST has no position.
    pub s_ra: Option<f64>,
    /// Declination, degrees; `None` when MAST has no position.
    pub s_dec: Option<f64>,
    pub obs_title: Option<String>,
    pub proposal_pi: Option<String>,
    /// Preview image URL (`jpegURL`).
    pub jpeg_url: Option<String>,
    /// `dataRights` (e.g. `PUBLIC`); absent from some MAST responses.
    pub data_rights: Option<String>,
}

impl Observation {
    /// Parses one row; the error names the column and the row index.
    pub fn from_row(row: &Row, index: usize) -> Result<Self, String> {
        let reader = RowReader { row, index };
        let proposal_text = reader.required_string("proposal_id")?;
        let proposal_id = proposal_text.trim().parse::<u32>().map_err(|_| {
            format!("column \"proposal_id\" in row {index} is {proposal_text:?}, expected a numeric proposal id")
        })?;
        let obs_id =
            MissionObsId::new(reader.required_string("obs_id")?).map_err(|err| err.to_string())?;
        Ok(Self {
            obsid: reader.required_obsid("obsid")?,
            obs_id,
            proposal_id,
            obs_collection: reader.required_string("obs_collection")?,
            instrument_name: reader.optional_string("instrument_name")?,
            target_name: reader.optional_string("target_name")?,
            filters: reader.optional_string("filters")?,
            dataproduct_type: reader.optional_string("dataproduct_type")?,
            calib_level: reader.optional_i64("calib_level")?,
            t_min: reader.optional_f64("t_min")?,
            t_exptime: reader.optional_f64("t_exptime")?,
            t_obs_release: reader.optional_f64("t_obs_release")?,
            s_ra: reader.optional_f64("s_ra")?,
            s_dec: reader.optional_f64("s_dec")?,
            obs_title: reader.optional_string("obs_title")?,
            proposal_pi: reader.optional_string("proposal_pi")?,
            jpeg_url: reader.optional_string("jpegURL")?,
            data_rights: reader.optional_string("dataRights")?,
        })
    }

    /// Returns true when both `s_ra` and `s_dec` are present.
    pub fn has_position(&self) -> bool {
        self.s_ra.is_some() && self.s_dec.is_some()
    }
}

/// Returns true when the row's `obs_collection` is HST.
pub fn is_hst_row(row: &Row) -> bool {
    row.get("obs_collection").and_then(|value| value.as_str()) == Some(HST_COLLECTION)
}

/// One data product of an observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The observation that owns the product (`obsID`).
    pub obsid: ObsId,
    /// The requested observation this row belongs to: `parent_obsid` when
    /// the row has one, otherwise `obsID`. It differs from `obsid` when a
    /// composite observation lists the products of its members.
    pub parent_obsid: ObsId,
    pub obs_id: MissionObsId,
    /// `mast:` URI of the file (`dataURI`).
    pub data_uri: String,
    /// `productType`, e.g. `SCIENCE`, `AUXILIARY`, `PREVIEW`.
    pub product_type: String,
    /// `productSubGroupDescription`, e.g. `DRZ`, `RAW`.
    pub product_subgroup: Option<String>,
    pub product_filename: String,
    /// File size in bytes (`size`).
    pub size_bytes: Option<u64>,
    pub description: Option<String>,
}

impl Product {
    /// Parses one row; the error names the column and the row index.
    pub fn from_row(row: &Row, index: usize) -> Result<Self, String> {
        let reader = RowReader { row, index };
        let obsid = reader.required_obsid("obsID")?;
        let parent_obsid = match reader.optional_string("parent_obsid")? {
            None => obsid,
            Some(_) => reader.required_obsid("parent_obsid")?,
        };
        let obs_id =
            MissionObsId::new(reader.required_string("obs_id")?).map_err(|err| err.to_string())?;
        Ok(Self {
            obsid,
            parent_obsid,
            obs_id,
            data_uri: reader.required_string("dataURI")?,
            product_type: reader.required_string("productType")?,
            product_subgroup: reader.optional_string("productSubGroupDescription")?,
            product_filename: reader.required_string("productFilename")?,
            size_bytes: reader.optional_u64("size")?,
            description: reader.optional_string("description")?,
        })
    }
}

/// Reason a product row was quarantined instead of returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuarantineReason {
    /// `parent_obsid` is 0, which names no observation.
    ParentObsidZero,
    /// The row's parent is not one of the obsids in the request.
    ParentNotRequested,
}

impl QuarantineReason {
    /// Returns the stable reason code stored in ingest tables.
    pub fn code(self) -> &'static str {
        match self {
            Self::ParentObsidZero => "parent_obsid_zero",
            Self::ParentNotRequested => "parent_not_requested",
        }
    }
}

/// A product row that failed the referential check, kept for reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedProduct {
    pub product: Product,
    pub reason: QuarantineReason,
}

/// A response row that could not be read (a required value is null, empty or of the
/// wrong type). It is set aside with the reason instead of failing the whole query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub service: &'static str,
    /// Index of the row in its response page set.
    pub index: usize,
    /// The row as MAST sent it, as compact JSON.
    pub row_json: String,
    pub reason: String,
}

/// The result of an observations query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservationList {
    pub observations: Vec<Observation>,
    pub rejected: Vec<RejectedRow>,
}

impl ObservationList {
    /// Appends another list, keeping order.
    pub fn extend(&mut self, other: ObservationList) {
        self.observations.extend(other.observations);
        self.rejected.extend(other.rejected);
    }
}

impl std::ops::Deref for ObservationList {
    type Target = [Observation];

    fn deref(&self) -> &[Observation] {
        &self.observations
    }
}

/// The result of a products query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductList {
    pub products: Vec<Product>,
    pub quarantined: Vec<QuarantinedProduct>,
    pub rejected: Vec<RejectedRow>,
}

impl ProductList {
    /// Appends another list, keeping order.
    pub fn extend(&mut self, other: ProductList) {
        self.products.extend(other.products);
        self.quarantined.extend(other.quarantined);
        self.rejected.extend(other.rejected);
    }
}

/// Splits parsed products into accepted and quarantined rows by checking each
/// parent against `requested`.
pub fn split_products(products: Vec<Product>, requested: &HashSet<ObsId>) -> ProductList {
    let mut list = ProductList::default();
    for product in products {
        let reason = if product.parent_obsid == ObsId(0) {
            Some(QuarantineReason::ParentObsidZero)
        } else if !requested.contains(&product.parent_obsid) {
            Some(QuarantineReason::ParentNotRequested)
        } else {
            None
        };
        match reason {
            Some(reason) => list
                .quarantined
                .push(QuarantinedProduct { product, reason }),
            None => list.products.push(product),
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: serde_json::Value) -> Row {
        serde_json::from_value(value).unwrap()
    }

    fn product_row(obsid: u64, parent: Option<u64>, uri: &str) -> Row {
        let mut row = row(json!({
            "obsID": obsid.to_string(), "obs_id": "jbz504eoq", "dataURI": uri,
            "productType": "SCIENCE", "productFilename": "jbz504eoq_raw.fits", "size": 10
        }));
        if let Some(parent) = parent {
            row.insert("parent_obsid".to_owned(), json!(parent));
        }
        row
    }

    #[test]
    fn observation_null_position_is_none() {
        let parsed = Observation::from_row(
            &row(
                json!({"obsid": "5", "obs_id": "jbz504eoq", "proposal_id": "13012",
                        "obs_collection": "HST", "s_ra": null, "s_dec": null}),
            ),
            0,
        )
        .unwrap();
        assert_eq!(parsed.s_ra, None);
        assert_eq!(parsed.s_dec, None);
        assert!(!parsed.has_position());
        assert_eq!(parsed.proposal_id, 13012);
    }

    #[test]
    fn observation_rejects_non_numeric_proposal() {
        let reason = Observation::from_row(
            &row(
                json!({"obsid": 5, "obs_id": "x", "proposal_id": "AR-1", "obs_collection": "HST"}),
            ),
            3,
        )
        .unwrap_err();
        assert!(reason.contains("proposal_id"), "{reason}");
        assert!(reason.contains("row 3"), "{reason}");
    }

    #[test]
    fn parent_zero_is_quarantined() {
        let products = vec![
            Product::from_row(&product_row(7, Some(0), "mast:HST/product/a.fits"), 0).unwrap(),
            Product::from_row(&product_row(7, None, "mast:HST/product/b.fits"), 1).unwrap(),
            Product::from_row(&product_row(8, Some(99), "mast:HST/product/c.fits"), 2).unwrap(),
        ];
        let requested = HashSet::from([ObsId(7), ObsId(8)]);
        let list = split_products(products, &requested);

        assert_eq!(list.products.len(), 1);
        assert_eq!(list.products[0].data_uri, "mast:HST/product/b.fits");
        assert_eq!(list.quarantined.len(), 2);
        assert_eq!(list.quarantined[0].reason.code(), "parent_obsid_zero");
        assert_eq!(list.quarantined[1].reason.code(), "parent_not_requested");
        assert!(
            list.products
                .iter()
                .all(|product| product.parent_obsid != ObsId(0))
        );
    }

    #[test]
    fn shared_data_uri_rows_are_kept() {
        let uri = "mast:HST/product/shared.fits";
        let products = vec![
            Product::from_row(&product_row(7, None, uri), 0).unwrap(),
            Product::from_row(&product_row(8, None, uri), 1).unwrap(),
        ];
        let list = split_products(products, &HashSet::from([ObsId(7), ObsId(8)]));
        assert_eq!(list.products.len(), 2);
        assert!(list.quarantined.is_empty());
    }
}
