//! Security: every route needs credentials (401 without), each action needs a permission
//! (403 naming it and the index), users, roles, mappings and API keys live in the bucket and
//! survive every node, and repeated failed logins from one address are refused (429).

use std::time::Duration;

use floe_tests::*;

/// A role and a user per kind of caller: `reader` reads `logs-*`, `writer` indexes into
/// and creates `logs-*`.
async fn set_up_users(c: &Client) {
    for (role, body) in [
        (
            "logs_reader",
            json!({"index_permissions": [{"index_patterns": ["logs-*"], "allowed_actions": ["read"]}]}),
        ),
        (
            "logs_writer",
            json!({"index_permissions": [{"index_patterns": ["logs-*"],
                "allowed_actions": ["index", "create_index"]}]}),
        ),
    ] {
        let r = c
            .put(&format!("/_plugins/_security/api/roles/{role}"), &body)
            .await;
        assert_eq!(r.status, 201, "{r}");
        assert_eq!(r.json["status"], "CREATED", "{r}");
    }
    for (user, password) in [("reader", "reader-password"), ("writer", "writer-password")] {
        let r = c
            .put(
                &format!("/_plugins/_security/api/internalusers/{user}"),
                &json!({"password": password, "backend_roles": [format!("{user}s")]}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
    }
    // One by role mapping on a backend role, one by user name.
    let r = c
        .put(
            "/_plugins/_security/api/rolesmapping/logs_reader",
            &json!({"backend_roles": ["readers"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = c
        .put(
            "/_plugins/_security/api/rolesmapping/logs_writer",
            &json!({"users": ["writer"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
}

/// Every (method, path) the REST router declares (read from `src/http/mod.rs`, so a route
/// added later is covered too), with path parameters filled in.
fn every_route() -> Vec<(Method, String)> {
    let source = include_str!("../../src/http/mod.rs");
    let mut out = Vec::new();
    for chunk in source.split(".route(").skip(1) {
        let Some(path) = chunk.split('"').nth(1) else {
            continue;
        };
        let path = path
            .replace("{index}", "logs-1")
            .replace("{id}", "1")
            .replace("{name}", "x")
            .replace("{metric}", "docs")
            .replace("{block}", "write")
            .replace("{new_index}", "logs-2")
            .replace("{resource}", "roles");
        let methods = chunk.split(".route_layer").next().unwrap_or(chunk);
        for (token, method) in [
            ("get(", Method::GET),
            ("post(", Method::POST),
            ("put(", Method::PUT),
            ("delete(", Method::DELETE),
            ("head(", Method::HEAD),
            ("patch(", Method::PATCH),
        ] {
            if methods.contains(token) {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

/// A route, its body, and the status the reader, the writer and admin get.
type Row = (Method, &'static str, Option<Value>, u16, u16, u16);

/// Without credentials → 401; with a role lacking the permission → 403; with it → success,
/// for routes of every kind.
async fn routes_need_credentials_and_permissions(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let admin = env.client();
    set_up_users(&admin).await;
    for (index, n) in [("logs-1", 3), ("secret-1", 2)] {
        let docs = (0..n).map(|i| (format!("{i}"), json!({"n": i, "msg": "hello"})));
        admin
            .bulk_ok("/_bulk?refresh=true", bulk_body(index, docs))
            .await;
    }
    let anon = Client::anonymous(env.floe.url());
    let reader = admin.as_user("reader", "reader-password");
    let writer = admin.as_user("writer", "writer-password");

    // (method, path, body, reader's status, writer's status, admin's status), in order.
    let doc = json!({"n": 9});
    let table: Vec<Row> = vec![
        (Method::GET, "/", None, 403, 403, 200),
        (Method::GET, "/_cluster/health", None, 403, 403, 200),
        (Method::GET, "/_cat/nodes", None, 403, 403, 200),
        (Method::GET, "/logs-1/_search", None, 200, 403, 200),
        (Method::GET, "/logs-1/_count", None, 200, 403, 200),
        (Method::GET, "/secret-1/_search", None, 403, 403, 200),
        (Method::GET, "/logs-1/_doc/1", None, 200, 403, 200),
        (Method::GET, "/secret-1/_doc/1", None, 403, 403, 200),
        // As in OpenSearch, `read` does not include mappings (`indices:admin/mappings/get`).
        (Method::GET, "/logs-1/_mapping", None, 403, 403, 200),
        (
            Method::GET,
            "/logs-1/_field_caps?fields=*",
            None,
            200,
            403,
            200,
        ),
        (
            Method::PUT,
            "/logs-1/_doc/9",
            Some(doc.clone()),
            403,
            201,
            200,
        ),
        (
            Method::PUT,
            "/secret-1/_doc/9",
            Some(doc.clone()),
            403,
            403,
            201,
        ),
        (Method::DELETE, "/logs-1/_doc/9", None, 403, 403, 200),
        (Method::PUT, "/logs-new", Some(json!({})), 403, 200, 400),
        (Method::DELETE, "/logs-new", None, 403, 403, 200),
        (Method::POST, "/logs-1/_refresh", None, 403, 403, 200),
        (Method::POST, "/_refresh", None, 403, 403, 200),
        (
            Method::PUT,
            "/_index_template/t1",
            Some(json!({"index_patterns": ["t1-*"]})),
            403,
            403,
            200,
        ),
        (
            Method::GET,
            "/_plugins/_security/api/roles",
            None,
            403,
            403,
            200,
        ),
        (
            Method::PUT,
            "/_plugins/_security/api/internalusers/eve",
            Some(json!({"password": "eve-password"})),
            403,
            403,
            201,
        ),
        (
            Method::GET,
            "/_plugins/_security/authinfo",
            None,
            200,
            200,
            200,
        ),
        (Method::GET, "/_security/api_key", None, 200, 200, 200),
    ];
    // Every route of the router refuses an anonymous caller.
    let routes = every_route();
    assert!(routes.len() > 100, "{} routes found", routes.len());
    for (method, path) in routes {
        let r = anon.send(method.clone(), &path, None).await;
        if path == "/_plugins/_security/health" {
            assert_eq!(r.status, 200, "{r}");
            continue;
        }
        assert_eq!(r.status, 401, "{method} {path} without credentials: {r}");
    }
    for (method, path, body, for_reader, for_writer, for_admin) in table {
        let send = |c: &Client| {
            let body = body.as_ref().map(json_body);
            let c = c.clone();
            let method = method.clone();
            async move { c.send(method, path, body).await }
        };
        let r = send(&anon).await;
        assert_error(&r, 401, "security_exception");
        assert!(
            r.headers.contains_key("www-authenticate"),
            "{method} {path}: 401 without WWW-Authenticate"
        );
        for (who, client, want) in [
            ("reader", &reader, for_reader),
            ("writer", &writer, for_writer),
            ("admin", &admin, for_admin),
        ] {
            let r = send(client).await;
            assert_eq!(r.status, want, "{who}: {method} {path}: {r}");
            if want == 403 {
                assert_error(&r, 403, "security_exception");
                let reason = r.json["error"]["reason"].as_str().unwrap();
                assert!(
                    reason.contains("no permissions for [") && reason.contains(who),
                    "the 403 names the action and the user: {reason}"
                );
            }
        }
    }
    // A 403 on an index names it.
    let r = reader.get("/secret-1/_search").await;
    assert!(
        r.text.contains("[indices:data/read/search] on [secret-1]"),
        "{r}"
    );

    // Searches and listings over everything show only what the caller may read.
    for path in [
        "/_search?size=50",
        "/*/_search?size=50",
        "/_all/_search?size=50",
    ] {
        let r = reader.get(path).await;
        assert_eq!(r.status, 200, "{path}: {r}");
        let indexes: std::collections::BTreeSet<&str> = hits(&r)
            .iter()
            .map(|h| h["_index"].as_str().unwrap())
            .collect();
        assert_eq!(
            indexes,
            ["logs-1"].into_iter().collect(),
            "{path} as reader: {r}"
        );
    }
    let r = reader.get("/_cat/indices?h=index").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text.trim(), "logs-1", "{r}");
    let r = admin.get("/_cat/indices?h=index&s=index").await;
    assert!(r.text.contains("secret-1"), "{r}");
    assert_eq!(
        reader.count("logs-*").await,
        3,
        "3 written, one added and deleted"
    );

    // Bulk items are authorized one by one.
    let body = "{\"index\":{\"_index\":\"logs-1\",\"_id\":\"b1\"}}\n{\"n\":1}\n\
                {\"index\":{\"_index\":\"secret-1\",\"_id\":\"b2\"}}\n{\"n\":2}\n";
    let r = writer.post_ndjson("/_bulk", body).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["errors"], true, "{r}");
    assert_eq!(r.json["items"][0]["index"]["status"], 201, "{r}");
    assert_eq!(r.json["items"][1]["index"]["status"], 403, "{r}");
    assert_eq!(
        r.json["items"][1]["index"]["error"]["type"], "security_exception",
        "{r}"
    );
    admin.refresh("secret-1").await;
    assert_eq!(admin.count("secret-1").await, 3, "nothing else lost");

    // A point in time over a wildcard holds only what the caller may read, and is searched
    // through `/_search` like any other.
    let r = reader
        .post_empty("/*/_search/point_in_time?keep_alive=1m")
        .await;
    assert_eq!(r.status, 200, "{r}");
    let pit = r.json["pit_id"].as_str().unwrap().to_string();
    let r = reader
        .post("/_search", &json!({"size": 50, "pit": {"id": pit}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        hits(&r).iter().all(|h| h["_index"] == "logs-1") && !hits(&r).is_empty(),
        "{r}"
    );

    // Multi-search and multi-get: each search and each document on its own indexes.
    let body = "{\"index\":\"logs-1\"}\n{}\n{\"index\":\"secret-1\"}\n{}\n{\"index\":\"*\"}\n{\"size\":50}\n";
    let r = reader.post_ndjson("/_msearch", body).await;
    assert_eq!(r.status, 200, "{r}");
    let responses = r.json["responses"].as_array().unwrap();
    assert_eq!(responses[0]["status"], 200, "{r}");
    assert_eq!(responses[1]["status"], 403, "{r}");
    assert_eq!(responses[1]["error"]["type"], "security_exception", "{r}");
    let seen: std::collections::BTreeSet<&str> = responses[2]["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_index"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["logs-1"].into_iter().collect(), "{r}");
    let r = reader
        .post(
            "/_mget",
            &json!({"docs": [{"_index": "logs-1", "_id": "0"}, {"_index": "secret-1", "_id": "0"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["docs"][0]["found"], true, "{r}");
    assert_eq!(
        r.json["docs"][1]["error"]["type"], "security_exception",
        "{r}"
    );
    assert!(r.json["docs"][1].get("_source").is_none(), "{r}");

    // Writing into a new index creates it: `index` alone is not enough.
    let r = admin
        .put(
            "/_plugins/_security/api/roles/logs_indexer",
            &json!({"index_permissions": [{"index_patterns": ["logs-*"], "allowed_actions": ["index"]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = admin
        .put(
            "/_plugins/_security/api/internalusers/indexer",
            &json!({"password": "indexer-password", "opendistro_security_roles": ["logs_indexer"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let indexer = admin.as_user("indexer", "indexer-password");
    let r = indexer.put("/logs-1/_doc/i1", &json!({"n": 1})).await;
    assert_eq!(r.status, 201, "an existing index: {r}");
    let r = indexer
        .put("/logs-brand-new/_doc/i1", &json!({"n": 1}))
        .await;
    assert_error(&r, 403, "security_exception");
    assert!(r.text.contains("indices:admin/create"), "{r}");
    let r = indexer
        .post_ndjson(
            "/_bulk",
            "{\"index\":{\"_index\":\"logs-brand-new\"}}\n{\"n\":1}\n",
        )
        .await;
    assert_eq!(r.json["items"][0]["index"]["status"], 403, "{r}");
    assert_eq!(admin.get("/logs-brand-new").await.status, 404);
    admin.refresh("logs-1").await;

    // Alias changes and reindexing: checked on every index and alias they name.
    let r = admin
        .put(
            "/_plugins/_security/api/roles/logs_admin",
            &json!({"index_permissions": [{"index_patterns": ["logs-*"],
                "allowed_actions": ["read", "index", "create_index", "manage_aliases"]}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = admin
        .put(
            "/_plugins/_security/api/internalusers/ladmin",
            &json!({"password": "ladmin-password", "opendistro_security_roles": ["logs_admin"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let ladmin = admin.as_user("ladmin", "ladmin-password");
    let alias =
        |index: &str, alias: &str| json!({"actions": [{"add": {"index": index, "alias": alias}}]});
    for (body, want) in [
        (alias("logs-1", "logs-all"), 200),
        (alias("secret-1", "logs-x"), 403),
        (alias("logs-1", "secret-alias"), 403),
        (alias("logs-*", "logs-every"), 200),
    ] {
        let r = ladmin.post("/_aliases", &body).await;
        assert_eq!(r.status, want, "{body}: {r}");
    }
    let reindex = |from: &str, to: &str| json!({"source": {"index": from}, "dest": {"index": to}});
    for (body, want) in [
        (reindex("logs-1", "logs-copy"), 200),
        (reindex("secret-1", "logs-copy2"), 403),
        (reindex("logs-1", "secret-copy"), 403),
    ] {
        let r = ladmin.post("/_reindex?refresh=true", &body).await;
        assert_eq!(r.status, want, "{body}: {r}");
    }
    assert_eq!(admin.get("/secret-copy").await.status, 404);
    assert_eq!(admin.get("/logs-copy2").await.status, 404);

    // Malformed credentials are refused like wrong ones.
    for header in [
        "Basic",
        "Basic !!!",
        "Bearer abc",
        "Basic YWRtaW4=",
        "ApiKey Og==",
    ] {
        let r = anon
            .clone()
            .with_auth(Some(header.to_string()))
            .get("/")
            .await;
        assert_error(&r, 401, "security_exception");
    }
    // A wrong password and an unknown user get the same answer.
    let wrong = admin.as_user("reader", "not-the-password").get("/").await;
    let unknown = admin.as_user("nobody", "not-the-password").get("/").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json, unknown.json.clone(), "{wrong} vs {unknown}");
}

/// Routes any authenticated caller may call: what they do is checked per item (bulk
/// items, searches of an `_msearch`, documents of an `_mget`, alias actions, the indexes of
/// a reindex), or they concern the caller alone (API keys, authinfo, a scroll or point in
/// time named by its id).
const CHECKED_PER_ITEM: [&str; 14] = [
    "/_bulk",
    "/_mget",
    "/logs-1/_mget",
    "/_msearch",
    "/logs-1/_msearch",
    "/_aliases",
    "/_reindex",
    "/_analyze",
    "/_search/scroll",
    "/_search/scroll/1",
    "/_search/point_in_time",
    "/_security/api_key",
    "/_plugins/_security/authinfo",
    "/_plugins/_security/health",
];

/// Routes over every index: they answer with what the caller may read (here: nothing).
const NARROWED: [&str; 7] = [
    "/_search",
    "/_count",
    "/_cat/indices",
    "/_cat/count",
    "/_mapping",
    "/_field_caps",
    "/_validate/query",
];

/// Over every route the router declares: no credentials → 401; a user without roles → 403
/// (except the routes checked per item, which never answer 401 or 500 to them); `admin`
/// → neither 401 nor 403, and never 500.
#[tokio::test]
async fn every_route_is_guarded() {
    let env = TestEnv::start(Backend::Local).await;
    let admin = env.client();
    admin
        .bulk_ok(
            "/_bulk?refresh=true",
            bulk_body("logs-1", [("1".to_string(), json!({"n": 1}))]),
        )
        .await;
    let r = admin
        .put(
            "/_plugins/_security/api/internalusers/nobody",
            &json!({"password": "nobody-password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let anon = Client::anonymous(env.floe.url());
    let nobody = admin.as_user("nobody", "nobody-password");
    let routes = every_route();
    for (method, path) in &routes {
        let r = anon.send(method.clone(), path, None).await;
        if path != "/_plugins/_security/health" {
            assert_eq!(r.status, 401, "anonymous {method} {path}: {r}");
        }
        let r = nobody.send(method.clone(), path, None).await;
        if NARROWED.contains(&path.as_str()) {
            assert!(
                ![401, 403].contains(&r.status) && r.status < 500,
                "nobody {method} {path}: {r}"
            );
            assert!(!r.text.contains("logs-1"), "nobody {method} {path}: {r}");
        } else if CHECKED_PER_ITEM.contains(&path.as_str()) {
            assert!(
                ![401, 500].contains(&r.status),
                "nobody {method} {path}: {r}"
            );
        } else {
            assert_eq!(r.status, 403, "nobody {method} {path}: {r}");
            if *method != Method::HEAD {
                assert_error(&r, 403, "security_exception");
            }
        }
    }
    // Admin last: some of these delete what they name.
    for (method, path) in &routes {
        let r = admin.send(method.clone(), path, None).await;
        // (A 403 that is not security's, such as a write block set by `_block`, is fine.)
        let denied =
            r.status == 401 || (r.status == 403 && r.json["error"]["type"] == "security_exception");
        assert!(!denied && r.status < 500, "admin {method} {path}: {r}");
    }
}

/// Users, roles, mappings and an API key, made on one process, hold after every process
/// is SIGKILLed and every local file deleted: a fresh process on the same bucket, started
/// without the bootstrap variable, accepts the same credentials and refuses the same things.
async fn security_survives_every_node(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let admin = env.client();
    set_up_users(&admin).await;
    admin
        .bulk_ok(
            "/_bulk?refresh=true",
            bulk_body("logs-1", [("1".to_string(), json!({"n": 1}))]),
        )
        .await;
    // The reader's API key: limited further to `logs-1` reads.
    let reader = admin.as_user("reader", "reader-password");
    let r = reader
        .post(
            "/_security/api_key",
            &json!({"name": "dash", "expiration": "1d", "role_descriptors": {"only": {
                "index_permissions": [{"index_patterns": ["logs-1"], "allowed_actions": ["read"]}]}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let encoded = r.json["encoded"].as_str().unwrap().to_string();
    let key_id = r.json["id"].as_str().unwrap().to_string();
    let mut first = env.floe;
    first.stop(); // SIGKILL
    first.wipe_cache();
    let storage = first.storage().clone();
    drop(first);

    let fresh = Floe::start_full("standalone", storage, None, &[], None).await;
    assert!(
        !fresh
            .log_tail(500)
            .contains("was created with the password"),
        "a bucket with a security state must not be bootstrapped again"
    );
    let admin = fresh.client();
    let reader = admin.as_user("reader", "reader-password");
    let keyed = admin.clone().with_auth(Some(format!("ApiKey {encoded}")));
    assert_eq!(admin.get("/_cluster/health").await.status, 200);
    assert_eq!(reader.count("logs-1").await, 1);
    assert_eq!(reader.get("/_cluster/health").await.status, 403);
    assert_eq!(keyed.count("logs-1").await, 1);
    let r = keyed.get("/logs-2/_search").await;
    assert_eq!(r.status, 403, "the key is limited to logs-1: {r}");
    let r = admin
        .as_user("writer", "writer-password")
        .get("/logs-1/_search")
        .await;
    assert_eq!(r.status, 403, "{r}");
    let r = admin.as_user("admin", "wrong").get("/").await;
    assert_eq!(r.status, 401);
    // Revoking the key works on the new process, and takes effect at once.
    let r = admin
        .send(
            Method::DELETE,
            "/_security/api_key",
            Some(json_body(&json!({"ids": [key_id]}))),
        )
        .await;
    assert_eq!(r.json["invalidated_api_keys"][0], key_id.as_str(), "{r}");
    assert_eq!(keyed.get("/logs-1/_count").await.status, 401);
    drop(fresh); // before the bucket (env's moto or directory) goes
}

/// A first start without `FLOE_INITIAL_ADMIN_PASSWORD` prints a generated password once;
/// repeated failed logins from one address are slowed, then refused with 429 for a while.
#[tokio::test]
async fn generated_password_and_brute_force() {
    let (_dir, storage) = temp_local_storage();
    let floe = Floe::start_full(
        "standalone",
        storage,
        Some("[security]\nmax_failed_logins = 5\nblock_ms = 2000\n"),
        &[],
        None,
    )
    .await;
    let log = floe.log_tail(200);
    let password = log
        .lines()
        .skip_while(|l| !l.contains("was created with the password"))
        .nth(2)
        .map(str::trim)
        .expect("the generated password is printed")
        .to_string();
    assert!(password.len() >= 20, "{password}");
    let admin = floe.client().as_user("admin", &password);
    assert_eq!(admin.get("/").await.status, 200);

    let bad = floe.client().as_user("admin", "guess-guess");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(bad.get("/").await.status);
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    let refused = bad.get("/").await;
    assert_error(&refused, 429, "security_exception");
    assert!(refused.headers.contains_key("retry-after"), "{refused}");
    // The block covers the address, whatever the credentials…
    assert_eq!(admin.get("/").await.status, 429);
    // …for a while only.
    let back = poll_until(Duration::from_secs(10), Duration::from_millis(250), || {
        let admin = admin.clone();
        async move { admin.get("/").await.status == 200 }
    })
    .await;
    assert!(back.is_some(), "the address stayed blocked");
}

/// A user created through one process logs in on another process on the same bucket within
/// about a second (the metastore's change log).
#[tokio::test]
async fn changes_reach_other_processes() {
    let (_dir, storage) = temp_local_storage();
    let a = Floe::start(storage.clone(), None).await;
    let b = Floe::start(storage, None).await;
    let ca = a.client();
    let on_b = b.client().as_user("late", "late-password");
    assert_eq!(on_b.get("/_plugins/_security/authinfo").await.status, 401);
    let r = ca
        .put(
            "/_plugins/_security/api/internalusers/late",
            &json!({"password": "late-password", "opendistro_security_roles": ["readall"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let took = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let on_b = on_b.clone();
        async move { on_b.get("/_plugins/_security/authinfo").await.status == 200 }
    })
    .await
    .expect("the user never reached the other process");
    eprintln!("a new user logged in on another process after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let r = on_b.get("/_plugins/_security/authinfo").await;
    assert_eq!(r.json["user_name"], "late", "{r}");
    assert_eq!(r.json["roles"], json!(["readall"]), "{r}");
    // Deleting the user locks it out there too.
    let r = ca
        .delete("/_plugins/_security/api/internalusers/late")
        .await;
    assert_eq!(r.status, 200, "{r}");
    let gone = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let on_b = on_b.clone();
        async move { on_b.get("/_plugins/_security/authinfo").await.status == 401 }
    })
    .await;
    assert!(
        gone.is_some(),
        "a deleted user kept working on the other process"
    );
}

/// The management API: reserved roles cannot change, weak passwords are refused, PATCH
/// edits a record, and `[security] enabled = false` opens every route (with a warning).
#[tokio::test]
async fn management_api_and_turning_security_off() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/_plugins/_security/api/roles/all_access",
            &json!({"cluster_permissions": []}),
        )
        .await;
    assert_eq!(r.status, 403, "{r}");
    let r = c
        .put(
            "/_plugins/_security/api/internalusers/weak",
            &json!({"password": "short"}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    let r = c
        .put(
            "/_plugins/_security/api/internalusers/pat",
            &json!({"password": "pat-password", "backend_roles": ["a"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = c
        .send(
            Method::PATCH,
            "/_plugins/_security/api/internalusers/pat",
            Some(json_body(&json!([
                {"op": "replace", "path": "/backend_roles", "value": ["b", "c"]}
            ]))),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.get("/_plugins/_security/api/internalusers/pat").await;
    assert_eq!(r.json["pat"]["backend_roles"], json!(["b", "c"]), "{r}");
    assert_eq!(r.json["pat"]["hash"], "", "hashes are never shown: {r}");
    let r = c
        .as_user("pat", "pat-password")
        .get("/_plugins/_security/authinfo")
        .await;
    assert_eq!(r.json["backend_roles"], json!(["b", "c"]), "{r}");
    let r = c.get("/_plugins/_security/api/internalusers/nobody").await;
    assert_eq!(r.status, 404, "{r}");
    let r = c.get("/_plugins/_security/api/roles").await;
    assert_eq!(r.json["all_access"]["reserved"], true, "{r}");
    let r = c
        .put(
            "/_plugins/_security/api/rolesmapping/no_such_role",
            &json!({"users": ["pat"]}),
        )
        .await;
    assert_eq!(r.status, 404, "{r}");

    let (_dir, storage) = temp_local_storage();
    let open = Floe::start(storage, Some("[security]\nenabled = false\n")).await;
    let anon = Client::anonymous(open.url());
    assert_eq!(anon.get("/_cluster/health").await.status, 200);
    assert!(open.log_tail(200).contains("SECURITY IS OFF"));
}

e2e!(
    routes_need_credentials_and_permissions,
    security_survives_every_node
);

/// Between nodes: every gRPC call needs the cluster secret kept in the bucket. A caller
/// without it (or with another) is refused, whatever it asks; nodes that read the bucket
/// find each other and serve.
#[tokio::test]
async fn grpc_needs_the_cluster_secret() {
    use floe_proto::rpc::metastore_client::MetastoreClient;
    use floe_proto::rpc::node_client::NodeClient;
    use floe_proto::rpc::{HeartbeatRequest, RestRequest};
    use floe_proto::secret::ClusterSecret;

    let (_dir, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let writer = Floe::start_role(
        "writer",
        storage.clone(),
        None,
        &["--node-id", "w1", "--metastore", &url],
    )
    .await;
    // The writer joined with the secret: the metastore lists it.
    let c = writer.client();
    let joined = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let c = c.clone();
        async move { c.get("/_cat/nodes?h=name").await.text.contains("w1") }
    })
    .await;
    assert!(joined.is_some(), "{}", writer.log_tail(50));

    let rest = || RestRequest {
        method: "GET".into(),
        path_and_query: "/".into(),
        body: Vec::new(),
        content_type: String::new(),
        authorization: basic_auth("admin", ADMIN_PASSWORD),
    };
    let channel = tonic::transport::Endpoint::from_shared(writer.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = NodeClient::new(channel.clone()).rest(rest()).await;
    assert_eq!(
        refused.unwrap_err().code(),
        tonic::Code::Unauthenticated,
        "a call without the secret (even with an admin's credentials)"
    );
    let wrong = ClusterSecret::new("0123456789abcdef").unwrap();
    let refused = NodeClient::with_interceptor(channel.clone(), wrong.clone())
        .rest(rest())
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    let ms_channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = MetastoreClient::with_interceptor(ms_channel.clone(), wrong)
        .heartbeat(HeartbeatRequest::default())
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    // Whoever can read the bucket has it.
    let secret = local_cluster_secret(&storage);
    let right = ClusterSecret::new(secret.trim()).unwrap();
    let answer = NodeClient::with_interceptor(channel, right)
        .rest(rest())
        .await
        .expect("the secret lets the call in")
        .into_inner();
    assert_eq!(answer.status, 200);
    // The forwarded request was authenticated again: without credentials it is a 401.
    let channel = tonic::transport::Endpoint::from_shared(writer.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let right = ClusterSecret::new(secret.trim()).unwrap();
    let answer = NodeClient::with_interceptor(channel, right)
        .rest(RestRequest {
            authorization: String::new(),
            ..rest()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, 401);
}

/// A CA, and a certificate it signed for 127.0.0.1 and localhost: (CA PEM, cert PEM, key PEM).
fn test_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// With `[tls]`: the REST API answers over HTTPS only, and nodes reach each other over gRPC
/// with TLS (a writer joins the metastore and serves); plain connections are refused.
#[tokio::test]
async fn tls_for_http_and_grpc() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(certs.path().join(name), pem).unwrap();
    }
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\n",
        certs.path().join("cert.pem"),
        certs.path().join("key.pem"),
        certs.path().join("ca.pem")
    );
    let (_dir, storage) = temp_local_storage();
    let metastore = Floe::start_tls(
        "metastore",
        storage.clone(),
        &config,
        &["--node-id", "m1"],
        ca.as_bytes(),
    )
    .await;
    let url = metastore.grpc_url();
    assert!(url.starts_with("https://"), "{url}");
    let writer = Floe::start_tls(
        "writer",
        storage.clone(),
        &config,
        &["--node-id", "w1", "--metastore", &url],
        ca.as_bytes(),
    )
    .await;
    let c = writer.client();
    assert!(c.base_url().starts_with("https://"));
    // The writer joined over gRPC with TLS, and serves over HTTPS.
    let joined = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let c = c.clone();
        async move { c.get("/_cat/nodes?h=name").await.text.contains("w1") }
    })
    .await;
    assert!(joined.is_some(), "{}", writer.log_tail(60));
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body("tls-logs", [("1".to_string(), json!({"n": 1}))]),
    )
    .await;
    assert_eq!(c.count("tls-logs").await, 1);
    // Plain HTTP to the same port gets no answer; a client that does not trust the CA
    // cannot connect.
    let plain = Client::new(format!("http://127.0.0.1:{}", writer.port()));
    assert!(
        plain
            .try_send(Method::GET, "/", None)
            .await
            .map_or(true, |r| r.status != 200),
        "plain HTTP was answered"
    );
    let untrusting = Client::new(writer.url());
    assert!(untrusting.try_send(Method::GET, "/", None).await.is_err());
    // gRPC without TLS is refused at the connection.
    let plain_grpc = tonic::transport::Endpoint::from_shared(format!(
        "http://127.0.0.1:{}",
        url.rsplit(':').next().unwrap()
    ))
    .unwrap()
    .connect_timeout(Duration::from_secs(2))
    .timeout(Duration::from_secs(2));
    let refused = match plain_grpc.connect().await {
        Err(_) => true,
        Ok(channel) => floe_proto::rpc::metastore_client::MetastoreClient::new(channel)
            .heartbeat(floe_proto::rpc::HeartbeatRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plain gRPC was answered");
}
