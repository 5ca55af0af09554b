//! What both SQL sinks know of a target table once they have read its
//! catalog: its columns by name, and the ones an insert must set; the
//! column lookup and the required-column check each batch makes before it
//! sends anything. The column's type (`C`) is the database's own.

use std::collections::HashMap;

/// What the shared checks need of a catalog's column.
pub trait CatalogColumn {
    /// A generated column: it cannot be written.
    fn generated(&self) -> bool;
    /// Its type with length, for messages (`character varying(20)`).
    fn type_shown(&self) -> &str;
}

/// A table the sink writes, its columns as the catalog describes them.
#[derive(Debug)]
pub struct TableInfo<C> {
    /// The table's name as the config writes it.
    pub name: String,
    /// The quoted, qualified name to write in SQL.
    pub sql_name: String,
    /// Its columns, by name.
    pub columns: HashMap<String, C>,
    /// The columns that must be set on insert: NOT NULL, no default, not generated.
    pub required: Vec<String>,
}

impl<C: CatalogColumn> TableInfo<C> {
    /// The column `name`, or the problem naming it.
    pub fn column(&self, name: &str) -> Result<&C, String> {
        match self.columns.get(name) {
            Some(c) if c.generated() => Err(format!(
                "table `{}`, column `{name}` is generated and cannot be written; leave it out of the row",
                self.name
            )),
            Some(c) => Ok(c),
            None => Err(format!(
                "table `{}` has no column `{name}`; add the column, or leave it out of the row",
                self.name
            )),
        }
    }

    /// Checks that upserts setting `cols` set every required column; the
    /// problem names the first one they leave out.
    pub fn check_required(&self, cols: &[&str]) -> Result<(), String> {
        match self.required.iter().find(|r| !cols.contains(&r.as_str())) {
            None => Ok(()),
            Some(req) => Err(format!(
                "table `{}`, column `{req}` ({}) is NOT NULL without a default, and an upsert does not set it; set it in every upsert's row, or give the column a default",
                self.name,
                self.columns[req].type_shown()
            )),
        }
    }
}
