//! OpenAPI schemas of the core types the HTTP API reads and writes (the
//! `schema` feature): the policy document and the budget report. The types
//! written as text or as a bare integer describe their own form here.

use crate::amount::Msat;
use crate::policy::{PayeeEntry, Window};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

impl PartialSchema for Msat {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .description(Some("Millisatoshis"))
            .into()
    }
}

impl ToSchema for Msat {}

impl PartialSchema for Window {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(day|week|month|[1-9][0-9]{0,8}[smhd])$"))
            .description(Some(
                "A rolling window (\"30s\" to \"366d\": seconds, minutes, hours or days) or a calendar one \
                 (\"day\", \"week\", \"month\", UTC)",
            ))
            .into()
    }
}

impl ToSchema for Window {}

impl PartialSchema for PayeeEntry {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^(agent|node|domain):.+$"))
            .description(Some("\"agent:ID\", \"node:PUBKEY_HEX\" (33-byte compressed key) or \"domain:NAME\""))
            .into()
    }
}

impl ToSchema for PayeeEntry {}
