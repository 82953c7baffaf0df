//! The PostgreSQL fake (`spin:postgres/postgres@4.0.0`): statements answered from a script,
//! matched by a fragment of their SQL, every statement recorded with its parameters.
//!
//! A statement is answered by the first matching one-shot answer (in the order scripted), else
//! by the last matching standing one; a query that matches nothing gets no rows, and an
//! `execute` that matches nothing affects none.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::bindings::platform::spin::postgres::postgres::{
    self as wit, Column, DbDataType, DbValue, Error, ParameterValue, RowSet,
};
use crate::lock;

/// An open connection (the address is in the recorded [`PgCall::Open`]).
pub struct PgConnection;

/// One call the component made.
#[derive(Debug, Clone, PartialEq)]
pub enum PgCall {
    Open(String),
    Query {
        statement: String,
        params: Vec<ParameterValue>,
    },
    Execute {
        statement: String,
        params: Vec<ParameterValue>,
    },
}

impl PgCall {
    /// The statement, for a query or an execute.
    pub fn statement(&self) -> Option<&str> {
        match self {
            PgCall::Open(_) => None,
            PgCall::Query { statement, .. } | PgCall::Execute { statement, .. } => Some(statement),
        }
    }

    /// The parameters, for a query or an execute.
    pub fn params(&self) -> &[ParameterValue] {
        match self {
            PgCall::Open(_) => &[],
            PgCall::Query { params, .. } | PgCall::Execute { params, .. } => params,
        }
    }
}

/// What a scripted statement answers.
#[derive(Debug, Clone)]
pub enum PgAnswer {
    /// A query's rows.
    Rows(RowSet),
    /// An execute's count of affected rows.
    Affected(u64),
    /// The statement fails.
    Fail(Error),
}

/// A row set from column names and rows; each column's type is taken from its first non-null
/// value (a column of nulls is `str`).
pub fn rows(columns: &[&str], rows: Vec<Vec<DbValue>>) -> RowSet {
    let columns = columns
        .iter()
        .enumerate()
        .map(|(index, name)| Column {
            name: (*name).to_owned(),
            data_type: rows
                .iter()
                .filter_map(|row| row.get(index))
                .find(|value| !matches!(value, DbValue::DbNull))
                .map_or(DbDataType::Str, data_type_of),
        })
        .collect();
    RowSet { columns, rows }
}

fn data_type_of(value: &DbValue) -> DbDataType {
    match value {
        DbValue::Boolean(_) => DbDataType::Boolean,
        DbValue::Int8(_) => DbDataType::Int8,
        DbValue::Int16(_) => DbDataType::Int16,
        DbValue::Int32(_) => DbDataType::Int32,
        DbValue::Int64(_) => DbDataType::Int64,
        DbValue::Floating32(_) => DbDataType::Floating32,
        DbValue::Floating64(_) => DbDataType::Floating64,
        DbValue::Str(_) | DbValue::DbNull => DbDataType::Str,
        DbValue::Binary(_) => DbDataType::Binary,
        DbValue::Date(_) => DbDataType::Date,
        DbValue::Time(_) => DbDataType::Time,
        DbValue::Datetime(_) => DbDataType::Datetime,
        DbValue::Timestamp(_) => DbDataType::Timestamp,
        DbValue::Uuid(_) => DbDataType::Uuid,
        DbValue::Jsonb(_) => DbDataType::Jsonb,
        DbValue::Decimal(_) => DbDataType::Decimal,
        DbValue::RangeInt32(_) => DbDataType::RangeInt32,
        DbValue::RangeInt64(_) => DbDataType::RangeInt64,
        DbValue::RangeDecimal(_) => DbDataType::RangeDecimal,
        DbValue::ArrayInt32(_) => DbDataType::ArrayInt32,
        DbValue::ArrayInt64(_) => DbDataType::ArrayInt64,
        DbValue::ArrayDecimal(_) => DbDataType::ArrayDecimal,
        DbValue::ArrayStr(_) => DbDataType::ArrayStr,
        DbValue::Interval(_) => DbDataType::Interval,
        DbValue::Unsupported(_) => DbDataType::Other("unsupported".into()),
    }
}

struct Rule {
    fragment: String,
    answer: PgAnswer,
}

#[derive(Default)]
struct Script {
    once: VecDeque<Rule>,
    standing: Vec<Rule>,
    refuse_connections: Option<String>,
    calls: Vec<PgCall>,
}

/// The PostgreSQL fake. Clones share one script and one record.
#[derive(Clone, Default)]
pub struct FakePostgres {
    script: Arc<Mutex<Script>>,
}

/// Whitespace collapsed, so that a fragment matches however the statement is laid out.
fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl FakePostgres {
    /// Answers every statement that contains `fragment` with `answer`, from now on.
    pub fn on(&self, fragment: &str, answer: PgAnswer) -> &Self {
        lock(&self.script).standing.push(Rule {
            fragment: normalize(fragment),
            answer,
        });
        self
    }

    /// Answers the next statement that contains `fragment` with `answer`, once.
    pub fn on_once(&self, fragment: &str, answer: PgAnswer) -> &Self {
        lock(&self.script).once.push_back(Rule {
            fragment: normalize(fragment),
            answer,
        });
        self
    }

    /// Makes `open` fail with `message` (`None`: succeed again), as a database that is down.
    pub fn refuse_connections(&self, message: Option<&str>) -> &Self {
        lock(&self.script).refuse_connections = message.map(str::to_owned);
        self
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<PgCall> {
        lock(&self.script).calls.clone()
    }

    /// The statements run so far that contain `fragment`, with their parameters.
    pub fn statements_like(&self, fragment: &str) -> Vec<PgCall> {
        let fragment = normalize(fragment);
        self.calls()
            .into_iter()
            .filter(|call| {
                call.statement()
                    .is_some_and(|sql| normalize(sql).contains(&fragment))
            })
            .collect()
    }

    fn answer(&self, call: PgCall) -> Option<PgAnswer> {
        let statement = normalize(call.statement().unwrap_or_default());
        let mut script = lock(&self.script);
        script.calls.push(call);
        if let Some(index) = script
            .once
            .iter()
            .position(|rule| statement.contains(&rule.fragment))
        {
            return script.once.remove(index).map(|rule| rule.answer);
        }
        script
            .standing
            .iter()
            .rev()
            .find(|rule| statement.contains(&rule.fragment))
            .map(|rule| rule.answer.clone())
    }
}

/// The view the bindings are implemented on.
pub struct PgView<'a> {
    pub(crate) fake: &'a FakePostgres,
    pub(crate) table: &'a mut ResourceTable,
}

/// The `HasData` marker of [`PgView`].
pub struct PgCapability;

impl HasData for PgCapability {
    type Data<'a> = PgView<'a>;
}

fn wrong_kind(expected: &str) -> Error {
    Error::Other(format!("the fake's scripted answer is not {expected}"))
}

impl wit::Host for PgView<'_> {}

impl wit::HostConnection for PgView<'_> {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        let refused = {
            let mut script = lock(&self.fake.script);
            script.calls.push(PgCall::Open(address));
            script.refuse_connections.clone()
        };
        if let Some(message) = refused {
            return Ok(Err(Error::ConnectionFailed(message)));
        }
        Ok(Ok(self.table.push(PgConnection)?))
    }

    async fn query(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        self.table.get(&conn)?;
        Ok(
            match self.fake.answer(PgCall::Query { statement, params }) {
                None => Ok(RowSet {
                    columns: Vec::new(),
                    rows: Vec::new(),
                }),
                Some(PgAnswer::Rows(rows)) => Ok(rows),
                Some(PgAnswer::Fail(error)) => Err(error),
                Some(PgAnswer::Affected(_)) => Err(wrong_kind("rows")),
            },
        )
    }

    async fn execute(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.table.get(&conn)?;
        Ok(
            match self.fake.answer(PgCall::Execute { statement, params }) {
                None => Ok(0),
                Some(PgAnswer::Affected(count)) => Ok(count),
                Some(PgAnswer::Fail(error)) => Err(error),
                Some(PgAnswer::Rows(_)) => Err(wrong_kind("a count of affected rows")),
            },
        )
    }

    async fn drop(&mut self, conn: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}
