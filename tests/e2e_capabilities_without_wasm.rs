//! The Redis and PostgreSQL capabilities against the real servers, without wasm: the host's
//! `Host` implementations are called directly, as the bindings would call them for a guest.
//! Every Redis key carries a prefix of its own; every PostgreSQL test has a database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use nexus_host::allowed_hosts::AllowedHosts;
use nexus_host::bindings::fermyon::spin::redis::{
    Error as RedisError, HostConnection as _, RedisParameter, RedisResult,
};
use nexus_host::bindings::spin::postgres::postgres::{
    DbDataType, DbValue, Error as PgError, HostConnection as _, Interval, ParameterValue,
    QueryError,
};
use nexus_host::budget::Budget;
use nexus_host::postgres::{PgBackend, PgBackends, PgCtx, PgCtxView};
use nexus_host::redis::{RedisBackend, RedisBackends, RedisCtx, RedisCtxView};
use support::{TestDatabase, redis_url, unique};
use wasmtime::component::{Resource, ResourceTable};

fn borrow<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(resource.rep())
}

#[tokio::test]
async fn redis_commands_on_a_real_server() {
    let address = redis_url();
    let backend: Arc<dyn RedisBackend> = Arc::new(RedisBackends::new(None));
    let allowed = Arc::new(AllowedHosts::parse(&["redis://127.0.0.1:6379"]).unwrap());
    let mut ctx = RedisCtx::new(backend, allowed, Budget::Requests);
    let mut table = ResourceTable::new();
    let mut view = RedisCtxView {
        ctx: &mut ctx,
        table: &mut table,
    };
    let prefix = unique("test");
    let key = |name: &str| format!("{prefix}:{name}");

    let conn = view.open(address.clone()).await.unwrap().unwrap();
    view.set(borrow(&conn), key("s"), b"v".to_vec())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        view.get(borrow(&conn), key("s")).await.unwrap().unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(
        view.get(borrow(&conn), key("none")).await.unwrap().unwrap(),
        None
    );
    assert_eq!(
        view.incr(borrow(&conn), key("n")).await.unwrap().unwrap(),
        1
    );
    assert_eq!(
        view.sadd(borrow(&conn), key("set"), vec!["a".into(), "b".into()])
            .await
            .unwrap()
            .unwrap(),
        2
    );
    // WRONGTYPE from the server is the interface's type-error.
    assert!(matches!(
        view.get(borrow(&conn), key("set")).await.unwrap(),
        Err(RedisError::TypeError)
    ));
    let mut members = view
        .smembers(borrow(&conn), key("set"))
        .await
        .unwrap()
        .unwrap();
    members.sort();
    assert_eq!(members, vec!["a", "b"]);
    assert_eq!(
        view.srem(borrow(&conn), key("set"), vec!["a".into()])
            .await
            .unwrap()
            .unwrap(),
        1
    );
    let listed = view
        .execute(
            borrow(&conn),
            "RPUSH".into(),
            vec![
                RedisParameter::Binary(key("l").into_bytes()),
                RedisParameter::Int64(7),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&listed[..], [RedisResult::Int64(1)]));
    let range = view
        .execute(
            borrow(&conn),
            "LRANGE".into(),
            vec![
                RedisParameter::Binary(key("l").into_bytes()),
                RedisParameter::Int64(0),
                RedisParameter::Int64(-1),
            ],
        )
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&range[..], [RedisResult::Binary(b)] if b == b"7"));
    // Commands that would alter a pooled connection are refused.
    assert!(
        view.execute(
            borrow(&conn),
            "SELECT".into(),
            vec![RedisParameter::Int64(1)]
        )
        .await
        .unwrap()
        .is_err()
    );
    view.publish(borrow(&conn), key("channel"), b"x".to_vec())
        .await
        .unwrap()
        .unwrap();
    // A transaction keeps one connection from MULTI to EXEC, whatever else the host sends on
    // its shared connection meanwhile (here, a second guest connection's command).
    let exec = |name: &str, args: Vec<RedisParameter>| (name.to_owned(), args);
    let other = view.open(address.clone()).await.unwrap().unwrap();
    for (name, args) in [
        exec("MULTI", Vec::new()),
        exec("INCR", vec![RedisParameter::Binary(key("n").into_bytes())]),
    ] {
        view.execute(borrow(&conn), name, args)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        view.incr(borrow(&other), key("n")).await.unwrap().unwrap(),
        2,
        "another connection's command is not queued in the transaction"
    );
    let committed = view
        .execute(borrow(&conn), "EXEC".into(), Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&committed[..], [RedisResult::Int64(3)]),
        "{committed:?}"
    );
    view.drop(other).await.unwrap();
    let deleted = view
        .del(
            borrow(&conn),
            vec![key("s"), key("n"), key("set"), key("l")],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, 4);
    view.drop(conn).await.unwrap();

    // An address outside allowed_outbound_hosts is refused before any connection is made.
    let refused = view.open("redis://127.0.0.2:6379".into()).await.unwrap();
    assert!(matches!(refused, Err(RedisError::Other(m)) if m.contains("allowed_outbound_hosts")));
}

#[tokio::test]
async fn postgres_values_round_trip_through_a_real_server() {
    let database = TestDatabase::create().await;
    let backend: Arc<dyn PgBackend> = Arc::new(PgBackends::new(None));
    let allowed = Arc::new(AllowedHosts::parse(&["postgres://127.0.0.1:5432"]).unwrap());
    let mut ctx = PgCtx::new(backend, allowed, Budget::Requests);
    let mut table = ResourceTable::new();
    let mut view = PgCtxView {
        ctx: &mut ctx,
        table: &mut table,
    };
    let conn = view.open(database.url.clone()).await.unwrap().unwrap();

    let params = vec![
        ParameterValue::Boolean(true),
        ParameterValue::Int16(-2),
        ParameterValue::Int32(3),
        ParameterValue::Int64(1 << 40),
        ParameterValue::Floating32(1.5),
        ParameterValue::Floating64(2.25),
        ParameterValue::Str("text é".into()),
        ParameterValue::Binary(vec![0, 1, 255]),
        ParameterValue::Date((2024, 2, 29)),
        ParameterValue::Time((23, 59, 58, 500_000_000)),
        ParameterValue::Datetime((2024, 2, 29, 12, 30, 0, 0)),
        ParameterValue::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
        ParameterValue::Jsonb(br#"{"a":[1,2]}"#.to_vec()),
        ParameterValue::Decimal("12345.678".into()),
        ParameterValue::ArrayInt32(vec![Some(1), None]),
        ParameterValue::ArrayStr(vec![Some("x".into()), None]),
        ParameterValue::Interval(Interval {
            micros: 1_000_000,
            days: 2,
            months: 3,
        }),
        ParameterValue::DbNull,
    ];
    let rows = view
        .query(
            borrow(&conn),
            "SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float4, $6::float8, $7::text, \
             $8::bytea, $9::date, $10::time, $11::timestamp, $12::uuid, $13::jsonb, \
             $14::numeric, $15::int4[], $16::text[], $17::interval, $18::text AS nothing, \
             now() AS at, inet '10.0.0.1' AS addr"
                .into(),
            params,
        )
        .await
        .unwrap()
        .unwrap();
    let row = &rows.rows[0];
    assert_eq!(row[0], DbValue::Boolean(true));
    assert_eq!(row[1], DbValue::Int16(-2));
    assert_eq!(row[2], DbValue::Int32(3));
    assert_eq!(row[3], DbValue::Int64(1 << 40));
    assert_eq!(row[4], DbValue::Floating32(1.5));
    assert_eq!(row[5], DbValue::Floating64(2.25));
    assert_eq!(row[6], DbValue::Str("text é".into()));
    assert_eq!(row[7], DbValue::Binary(vec![0, 1, 255]));
    assert_eq!(row[8], DbValue::Date((2024, 2, 29)));
    assert_eq!(row[9], DbValue::Time((23, 59, 58, 500_000_000)));
    assert_eq!(row[10], DbValue::Datetime((2024, 2, 29, 12, 30, 0, 0)));
    assert_eq!(
        row[11],
        DbValue::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into())
    );
    assert_eq!(row[12], DbValue::Jsonb(br#"{"a":[1,2]}"#.to_vec()));
    assert_eq!(row[13], DbValue::Decimal("12345.678".into()));
    assert_eq!(row[14], DbValue::ArrayInt32(vec![Some(1), None]));
    assert_eq!(row[15], DbValue::ArrayStr(vec![Some("x".into()), None]));
    assert_eq!(
        row[16],
        DbValue::Interval(Interval {
            micros: 1_000_000,
            days: 2,
            months: 3
        })
    );
    assert_eq!(row[17], DbValue::DbNull);
    assert!(
        matches!(row[18], DbValue::Datetime(_)),
        "timestamptz comes back as UTC"
    );
    assert!(
        matches!(row[19], DbValue::Unsupported(_)),
        "unknown types come back raw"
    );
    assert_eq!(rows.columns[17].name, "nothing");
    assert!(matches!(rows.columns[0].data_type, DbDataType::Boolean));
    assert!(matches!(&rows.columns[19].data_type, DbDataType::Other(name) if name == "inet"));

    // execute reports affected rows; errors carry PostgreSQL's SQLSTATE.
    let created = view
        .execute(
            borrow(&conn),
            "CREATE TABLE t (id int PRIMARY KEY)".into(),
            vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created, 0);
    let inserted = view
        .execute(
            borrow(&conn),
            "INSERT INTO t VALUES ($1), ($2)".into(),
            vec![ParameterValue::Int32(1), ParameterValue::Int32(2)],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inserted, 2);
    let duplicate = view
        .execute(borrow(&conn), "INSERT INTO t VALUES (1)".into(), vec![])
        .await
        .unwrap();
    let Err(PgError::QueryFailed(QueryError::DbError(db))) = duplicate else {
        panic!("expected a database error, got {duplicate:?}");
    };
    assert_eq!(db.code, "23505");
    let bad = view
        .query(
            borrow(&conn),
            "SELECT $1::uuid".into(),
            vec![ParameterValue::Uuid("nope".into())],
        )
        .await
        .unwrap();
    assert!(matches!(bad, Err(PgError::BadParameter(_))));

    // A transaction a guest leaves open is not handed to the next guest.
    view.execute(borrow(&conn), "BEGIN".into(), vec![])
        .await
        .unwrap()
        .unwrap();
    view.execute(borrow(&conn), "INSERT INTO t VALUES (3)".into(), vec![])
        .await
        .unwrap()
        .unwrap();
    view.drop(conn).await.unwrap();
    let conn = view.open(database.url.clone()).await.unwrap().unwrap();
    let count = view
        .query(borrow(&conn), "SELECT count(*) FROM t".into(), vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        count.rows[0][0],
        DbValue::Int64(2),
        "the abandoned insert was rolled back"
    );
    // Neither are its settings; and prepared statements are cached per connection, so a guest
    // that deallocates them on the server costs the next guest nothing.
    view.execute(
        borrow(&conn),
        "SET application_name = 'guest-a'".into(),
        vec![],
    )
    .await
    .unwrap()
    .unwrap();
    view.execute(borrow(&conn), "DEALLOCATE ALL".into(), vec![])
        .await
        .unwrap()
        .unwrap();
    view.drop(conn).await.unwrap();
    let conn = view.open(database.url.clone()).await.unwrap().unwrap();
    let count = view
        .query(borrow(&conn), "SELECT count(*) FROM t".into(), vec![])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(count.rows[0][0], DbValue::Int64(2));
    let name = view
        .query(
            borrow(&conn),
            "SELECT current_setting('application_name')".into(),
            vec![],
        )
        .await
        .unwrap()
        .unwrap();
    assert_ne!(name.rows[0][0], DbValue::Str("guest-a".into()));
    view.drop(conn).await.unwrap();

    let refused = view
        .open("postgres://postgres@127.0.0.2:5432/test".into())
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(PgError::ConnectionFailed(m)) if m.contains("allowed_outbound_hosts"))
    );
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_a_changed_history() {
    let database = TestDatabase::create().await;
    let first = nexus_host::migrate::migrate_url(&database.url)
        .await
        .unwrap();
    let all: Vec<i64> = nexus_host::migrate::migrations()
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(first, all);
    let again = nexus_host::migrate::migrate_url(&database.url)
        .await
        .unwrap();
    assert!(again.is_empty(), "nothing is applied twice: {again:?}");

    // A migration edited after it was applied is an error, not a silent difference.
    database
        .client()
        .await
        .execute(
            "UPDATE nexus_schema_migrations SET checksum = 'edited' WHERE version = $1",
            &[&all[0]],
        )
        .await
        .unwrap();
    let err = nexus_host::migrate::migrate_url(&database.url)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("has changed"), "{err:#}");
}
