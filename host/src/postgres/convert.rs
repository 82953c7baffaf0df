//! Conversions between `spin:postgres/postgres@4.0.0` values and tokio-postgres.
// The error is the interface's own `error` variant (with its structured `db-error`), which goes
// to the guest by value; boxing it here would only move the copy.
#![allow(clippy::result_large_err)]

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::bindings::spin::postgres::postgres::{
    Column, DbDataType, DbValue, Error as WitError, Interval, ParameterValue,
};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A parameter ready to be bound.
pub type BoundParameter = Box<dyn ToSql + Sync + Send>;

/// SQL NULL of whatever type the statement expects.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, BoxError> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// PostgreSQL's `interval`, in its binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PgInterval {
    micros: i64,
    days: i32,
    months: i32,
}

impl ToSql for PgInterval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 16] = raw.try_into().map_err(|_| "an interval is 16 bytes")?;
        let [
            m0,
            m1,
            m2,
            m3,
            m4,
            m5,
            m6,
            m7,
            d0,
            d1,
            d2,
            d3,
            n0,
            n1,
            n2,
            n3,
        ] = bytes;
        Ok(PgInterval {
            micros: i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]),
            days: i32::from_be_bytes([d0, d1, d2, d3]),
            months: i32::from_be_bytes([n0, n1, n2, n3]),
        })
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// The raw bytes of a value of a type nexus does not convert.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn bad(message: impl Into<String>) -> WitError {
    WitError::BadParameter(message.into())
}

fn date(y: i32, m: u8, d: u8) -> Result<NaiveDate, WitError> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| bad(format!("{y}-{m}-{d} is not a date")))
}

fn time(h: u8, m: u8, s: u8, ns: u32) -> Result<NaiveTime, WitError> {
    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
        .ok_or_else(|| bad(format!("{h}:{m}:{s}.{ns} is not a time")))
}

/// Turns a guest's parameter into something tokio-postgres can bind.
pub fn to_parameter(value: ParameterValue) -> Result<BoundParameter, WitError> {
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::Date((y, m, d)) => Box::new(date(y, m, d)?),
        ParameterValue::Time((h, m, s, ns)) => Box::new(time(h, m, s, ns)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            Box::new(NaiveDateTime::new(date(y, mo, d)?, time(h, mi, s, ns)?))
        }
        ParameterValue::Timestamp(v) => Box::new(v),
        ParameterValue::Uuid(v) => Box::new(
            uuid::Uuid::parse_str(&v).map_err(|err| bad(format!("`{v}` is not a UUID: {err}")))?,
        ),
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&v)
                .map_err(|err| bad(format!("jsonb parameter is not JSON: {err}")))?,
        ),
        ParameterValue::Decimal(v) => Box::new(
            v.parse::<Decimal>()
                .map_err(|err| bad(format!("`{v}` is not a decimal: {err}")))?,
        ),
        ParameterValue::ArrayInt32(v) => Box::new(v),
        ParameterValue::ArrayInt64(v) => Box::new(v),
        ParameterValue::ArrayStr(v) => Box::new(v),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.into_iter()
                .map(|item| {
                    item.map(|s| {
                        s.parse::<Decimal>()
                            .map_err(|err| bad(format!("`{s}` is not a decimal: {err}")))
                    })
                    .transpose()
                })
                .collect::<Result<Vec<Option<Decimal>>, _>>()?,
        ),
        ParameterValue::Interval(Interval {
            micros,
            days,
            months,
        }) => Box::new(PgInterval {
            micros,
            days,
            months,
        }),
        ParameterValue::DbNull => Box::new(Null),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_) => {
            return Err(bad("range parameters are not supported by nexus yet"));
        }
    })
}

/// The WIT type of a column.
pub fn column(column: &tokio_postgres::Column) -> Column {
    Column {
        name: column.name().to_owned(),
        data_type: data_type(column.type_()),
    }
}

fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSON | Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<Option<T>, WitError> {
    row.try_get::<_, Option<T>>(index).map_err(|err| {
        WitError::ValueConversionFailed(format!(
            "column {}: {err}",
            row.columns()
                .get(index)
                .map(|c| c.name())
                .unwrap_or_default()
        ))
    })
}

fn datetime_tuple(at: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    // chrono keeps these fields in their ranges (month 1..=12, hour 0..=23, ...).
    let narrow = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    (
        at.year(),
        narrow(at.month()),
        narrow(at.day()),
        narrow(at.hour()),
        narrow(at.minute()),
        narrow(at.second()),
        at.nanosecond(),
    )
}

/// The WIT value of one cell.
pub fn value(row: &Row, index: usize) -> Result<DbValue, WitError> {
    let ty = row
        .columns()
        .get(index)
        .map(|c| c.type_().clone())
        .unwrap_or(Type::UNKNOWN);
    let narrow = |n: u32| u8::try_from(n).unwrap_or(u8::MAX);
    let value = match ty {
        Type::BOOL => get::<bool>(row, index)?.map(DbValue::Boolean),
        Type::CHAR => get::<i8>(row, index)?.map(DbValue::Int8),
        Type::INT2 => get::<i16>(row, index)?.map(DbValue::Int16),
        Type::INT4 => get::<i32>(row, index)?.map(DbValue::Int32),
        Type::INT8 => get::<i64>(row, index)?.map(DbValue::Int64),
        Type::FLOAT4 => get::<f32>(row, index)?.map(DbValue::Floating32),
        Type::FLOAT8 => get::<f64>(row, index)?.map(DbValue::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            get::<String>(row, index)?.map(DbValue::Str)
        }
        Type::BYTEA => get::<Vec<u8>>(row, index)?.map(DbValue::Binary),
        Type::DATE => get::<NaiveDate>(row, index)?
            .map(|d| DbValue::Date((d.year(), narrow(d.month()), narrow(d.day())))),
        Type::TIME => get::<NaiveTime>(row, index)?.map(|t| {
            DbValue::Time((
                narrow(t.hour()),
                narrow(t.minute()),
                narrow(t.second()),
                t.nanosecond(),
            ))
        }),
        Type::TIMESTAMP => {
            get::<NaiveDateTime>(row, index)?.map(|at| DbValue::Datetime(datetime_tuple(at)))
        }
        Type::TIMESTAMPTZ => get::<chrono::DateTime<chrono::Utc>>(row, index)?
            .map(|at| DbValue::Datetime(datetime_tuple(at.naive_utc()))),
        Type::UUID => get::<uuid::Uuid>(row, index)?.map(|u| DbValue::Uuid(u.to_string())),
        Type::JSON | Type::JSONB => get::<serde_json::Value>(row, index)?
            .map(|json| DbValue::Jsonb(json.to_string().into_bytes())),
        Type::NUMERIC => get::<Decimal>(row, index)?.map(|d| DbValue::Decimal(d.to_string())),
        Type::INT4_ARRAY => get::<Vec<Option<i32>>>(row, index)?.map(DbValue::ArrayInt32),
        Type::INT8_ARRAY => get::<Vec<Option<i64>>>(row, index)?.map(DbValue::ArrayInt64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
            get::<Vec<Option<String>>>(row, index)?.map(DbValue::ArrayStr)
        }
        Type::NUMERIC_ARRAY => get::<Vec<Option<Decimal>>>(row, index)?.map(|items| {
            DbValue::ArrayDecimal(
                items
                    .into_iter()
                    .map(|d| d.map(|d| d.to_string()))
                    .collect(),
            )
        }),
        Type::INTERVAL => get::<PgInterval>(row, index)?.map(|i| {
            DbValue::Interval(Interval {
                micros: i.micros,
                days: i.days,
                months: i.months,
            })
        }),
        _ => get::<Raw>(row, index)?.map(|raw| DbValue::Unsupported(raw.0)),
    };
    Ok(value.unwrap_or(DbValue::DbNull))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_round_trips_through_its_binary_form() {
        let interval = PgInterval {
            micros: -5,
            days: 3,
            months: 14,
        };
        let mut buf = BytesMut::new();
        interval.to_sql(&Type::INTERVAL, &mut buf).unwrap();
        assert_eq!(
            PgInterval::from_sql(&Type::INTERVAL, &buf).unwrap(),
            interval
        );
        assert!(PgInterval::from_sql(&Type::INTERVAL, &buf[..15]).is_err());
    }

    #[test]
    fn bad_parameters_are_guest_errors() {
        for value in [
            ParameterValue::Date((2024, 2, 30)),
            ParameterValue::Uuid("nope".into()),
            ParameterValue::Jsonb(b"{".to_vec()),
            ParameterValue::Decimal("1.2.3".into()),
            ParameterValue::RangeInt32((None, None)),
        ] {
            assert!(matches!(
                to_parameter(value),
                Err(WitError::BadParameter(_))
            ));
        }
        assert!(to_parameter(ParameterValue::Datetime((2024, 2, 29, 23, 59, 59, 0))).is_ok());
    }
}
