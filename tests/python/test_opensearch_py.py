#!/usr/bin/env python3
"""opensearch-py against a running Floe on http://127.0.0.1:$FLOE_PORT.

A plain script (no pytest): runs each check in order, prints one line per check and
"opensearch-py: N passed, M failed" at the end, and exits non-zero if any check failed.
Later checks depend on earlier ones (the index and its documents).
"""

import os
import sys
import traceback

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import AuthenticationException, AuthorizationException, NotFoundError

PORT = int(os.environ["FLOE_PORT"])
INDEX = "pylogs"
N = 1000
STATUSES = [200, 200, 200, 200, 200, 200, 301, 404, 404, 500]

ADMIN_PASSWORD = os.environ["FLOE_ADMIN_PASSWORD"]


def connect(auth):
    return OpenSearch(
        hosts=[{"host": "127.0.0.1", "port": PORT}],
        http_auth=auth,
        use_ssl=False,
        timeout=30,
        max_retries=0,
    )


client = connect(("admin", ADMIN_PASSWORD))


def doc(i):
    status = STATUSES[i % 10]
    return {
        "@timestamp": "2024-05-01T%02d:%02d:%02dZ" % (i // 3600, i // 60 % 60, i % 60),
        "status": status,
        "message": "request %d %s" % (i, "failed with error" if status >= 400 else "completed ok"),
        "service": ["api", "web", "db", "auth"][i % 4],
        "latency_ms": i % 250,
    }


def count_where(pred):
    return sum(1 for i in range(N) if pred(doc(i)))


def check_info():
    info = client.info()
    assert info["version"]["distribution"] == "opensearch", info
    assert info["version"]["number"].startswith("2."), info


def check_create():
    r = client.indices.create(
        index=INDEX,
        body={
            "settings": {"number_of_shards": 2},
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date"},
                    "status": {"type": "integer"},
                    "message": {"type": "text"},
                    "service": {"type": "keyword"},
                    "latency_ms": {"type": "long"},
                }
            },
        },
    )
    assert r["acknowledged"] is True, r
    assert client.indices.exists(index=INDEX)
    assert not client.indices.exists(index="py-nope")
    mapping = client.indices.get_mapping(index=INDEX)
    assert mapping[INDEX]["mappings"]["properties"]["service"]["type"] == "keyword", mapping


def check_bulk():
    actions = ({"_index": INDEX, "_id": "py-%d" % i, "_source": doc(i)} for i in range(N))
    ok, errors = helpers.bulk(client, actions, chunk_size=250, raise_on_error=False)
    assert ok == N, (ok, errors[:3])
    assert not errors, errors[:3]


def check_refresh_count():
    client.indices.refresh(index=INDEX)
    assert client.count(index=INDEX)["count"] == N


def search_total(query, **kw):
    r = client.search(index=INDEX, body={"query": query, **kw})
    return r["hits"]["total"]["value"], r["hits"]["hits"]


def check_match():
    total, hits = search_total({"match": {"message": "error"}}, size=5)
    assert total == count_where(lambda d: d["status"] >= 400), total
    assert len(hits) == 5 and all(h["_source"]["status"] >= 400 for h in hits), hits


def check_term():
    total, _ = search_total({"term": {"service": "web"}})
    assert total == N // 4, total
    total, _ = search_total({"term": {"status": 404}})
    assert total == count_where(lambda d: d["status"] == 404), total


def check_range():
    total, _ = search_total({"range": {"latency_ms": {"gte": 100, "lt": 200}}})
    assert total == count_where(lambda d: 100 <= d["latency_ms"] < 200), total
    total, _ = search_total({"range": {"@timestamp": {"gte": "2024-05-01T00:10:00Z", "lt": "2024-05-01T00:12:00Z"}}})
    assert total == 120, total


def check_bool_sort():
    q = {"bool": {"filter": [{"term": {"service": "api"}}], "must_not": [{"term": {"status": 200}}]}}
    total, hits = search_total(q, size=10, sort=[{"@timestamp": "desc"}])
    want = [i for i in range(N) if i % 4 == 0 and STATUSES[i % 10] != 200]
    assert total == len(want), total
    assert [h["_id"] for h in hits] == ["py-%d" % i for i in sorted(want, reverse=True)[:10]], hits


def check_count_query():
    r = client.count(index=INDEX, body={"query": {"term": {"status": 500}}})
    assert r["count"] == count_where(lambda d: d["status"] == 500), r


def check_get_and_missing():
    r = client.get(index=INDEX, id="py-7")
    assert r["found"] and r["_source"] == doc(7), r
    try:
        client.get(index=INDEX, id="py-missing")
    except NotFoundError:
        pass
    else:
        raise AssertionError("missing doc did not raise NotFoundError")
    try:
        client.search(index="py-nope", body={"query": {"match_all": {}}})
    except NotFoundError as e:
        assert e.error == "index_not_found_exception", e.info
    else:
        raise AssertionError("search on a missing index did not raise NotFoundError")


def check_aliases_and_rollover():
    client.indices.put_alias(index=INDEX, name="py-errors", body={"filter": {"range": {"status": {"gte": 400}}}})
    assert client.indices.exists_alias(name="py-errors")
    r = client.indices.get_alias(name="py-errors")
    assert "filter" in r[INDEX]["aliases"]["py-errors"], r
    r = client.count(index="py-errors")
    assert r["count"] == count_where(lambda d: d["status"] >= 400), r
    client.indices.delete_alias(index=INDEX, name="py-errors")
    assert not client.indices.exists_alias(name="py-errors")
    client.indices.put_index_template(
        name="py-roll",
        body={"index_patterns": ["py-roll-*"], "template": {"settings": {"number_of_shards": 2}}},
    )
    client.indices.create(index="py-roll-000001", body={"aliases": {"py-roll": {"is_write_index": True}}})
    r = client.indices.rollover(alias="py-roll")
    assert r["rolled_over"] and r["new_index"] == "py-roll-000002", r
    s = client.indices.get_settings(index="py-roll-000002")
    assert s["py-roll-000002"]["settings"]["index"]["number_of_shards"] == "2", s
    r = client.index(index="py-roll", body={"n": 1}, refresh=True)
    assert r["_index"] == "py-roll-000002", r
    client.indices.delete(index="py-roll-*")
    client.indices.delete_index_template(name="py-roll")


def check_dashboards_shape():
    caps = client.field_caps(index="pylog*", params={"fields": "*"})
    assert caps["fields"]["@timestamp"]["date"]["aggregatable"], caps["fields"].get("@timestamp")
    assert caps["fields"]["message"]["text"]["searchable"], caps["fields"].get("message")
    body = {
        "size": 20,
        "sort": [{"@timestamp": {"order": "desc"}}],
        "query": {"bool": {"filter": [
            {"range": {"@timestamp": {"gte": "2024-05-01T00:00:00Z", "lte": "2024-05-01T00:10:00Z", "format": "strict_date_optional_time"}}},
            {"query_string": {"query": "status:500 AND message:failed", "analyze_wildcard": True}},
        ]}},
        "highlight": {"pre_tags": ["@kibana-highlighted-field@"], "post_tags": ["@/kibana-highlighted-field@"],
                      "fields": {"*": {}}, "fragment_size": 2147483647},
        "aggs": {
            "over_time": {"date_histogram": {"field": "@timestamp", "calendar_interval": "1d", "time_zone": "Europe/Berlin", "min_doc_count": 1}},
            "by_service": {"terms": {"field": "service.keyword", "order": {"slowest": "desc"}},
                           "aggs": {"slowest": {"max": {"field": "latency_ms"}}}},
        },
    }
    r = client.search(index=INDEX, body=body)
    want = [i for i in range(N) if doc(i)["status"] == 500 and i <= 600]
    assert r["hits"]["total"]["value"] == len(want), r["hits"]["total"]
    times = [h["_source"]["@timestamp"] for h in r["hits"]["hits"]]
    assert times == sorted(times, reverse=True), times
    marked = r["hits"]["hits"][0]["highlight"]["message"][0]
    assert "@kibana-highlighted-field@failed@/kibana-highlighted-field@" in marked, r["hits"]["hits"][0]
    day = r["aggregations"]["over_time"]["buckets"]
    assert [b["key_as_string"] for b in day] == ["2024-05-01T00:00:00.000+02:00"], day
    assert day[0]["doc_count"] == len(want), day
    svc = r["aggregations"]["by_service"]["buckets"]
    maxes = [b["slowest"]["value"] for b in svc]
    assert maxes == sorted(maxes, reverse=True), svc


def check_scan_and_pit():
    ids = [h["_id"] for h in helpers.scan(client, index=INDEX, query={"query": {"match_all": {}}}, size=97, scroll="1m")]
    assert len(ids) == N and len(set(ids)) == N, (len(ids), len(set(ids)))
    pit = client.create_pit(index=INDEX, params={"keep_alive": "1m"})["pit_id"]
    seen, after = [], None
    while True:
        body = {"size": 300, "pit": {"id": pit, "keep_alive": "1m"}, "sort": [{"status": "asc"}, {"@timestamp": "asc"}]}
        if after is not None:
            body["search_after"] = after
        hits = client.search(body=body)["hits"]["hits"]
        if not hits:
            break
        seen.extend(h["_id"] for h in hits)
        after = hits[-1]["sort"]
    client.delete_pit(body={"pit_id": [pit]})
    assert len(seen) == N and len(set(seen)) == N, (len(seen), len(set(seen)))


def check_by_query():
    r = client.reindex(body={"source": {"index": INDEX, "query": {"term": {"status": 500}}}, "dest": {"index": "py-copy"}}, refresh=True)
    errors = count_where(lambda d: d["status"] == 500)
    assert r["created"] == errors and r["failures"] == [], r
    r = client.update_by_query(index="py-copy", body={"script": {"source": "ctx._source.status = 599"}}, refresh=True)
    assert r["updated"] == errors, r
    assert client.count(index="py-copy", body={"query": {"term": {"status": 599}}})["count"] == errors
    r = client.delete_by_query(index="py-copy", body={"query": {"match_all": {}}}, refresh=True)
    assert r["deleted"] == errors, r
    assert client.count(index="py-copy")["count"] == 0
    client.indices.delete(index="py-copy")


def check_update():
    from opensearchpy.exceptions import ConflictError

    r = client.update(index=INDEX, id="py-7", body={"doc": {"tag": "seen"}}, refresh=True)
    assert r["result"] == "updated", r
    got = client.get(index=INDEX, id="py-7")
    assert got["_source"]["tag"] == "seen" and got["_source"]["status"] == doc(7)["status"], got
    r = client.update(
        index=INDEX,
        id="py-upserted",
        body={"script": {"source": "ctx._source.hits += params.n", "params": {"n": 1}}, "upsert": {"hits": 1}},
    )
    assert r["result"] == "created", r
    r = client.update(
        index=INDEX,
        id="py-upserted",
        body={"script": {"source": "ctx._source.hits += params.n", "params": {"n": 1}}, "upsert": {"hits": 1}},
        params={"_source": "true"},
    )
    assert r["get"]["_source"] == {"hits": 2}, r
    try:
        client.index(index=INDEX, id="py-7", body={"x": 1}, params={"if_seq_no": got["_seq_no"] + 100, "if_primary_term": got["_primary_term"]})
    except ConflictError:
        pass
    else:
        raise AssertionError("a stale if_seq_no did not raise ConflictError")
    r = client.index(index=INDEX, id="py-7", body=got["_source"], params={"if_seq_no": got["_seq_no"], "if_primary_term": got["_primary_term"]})
    assert r["result"] == "updated", r
    client.delete(index=INDEX, id="py-upserted", refresh=True)


def check_security():
    # No or wrong credentials: 401; a user limited to one index pattern: 403 elsewhere.
    for auth in (None, ("admin", "wrong-password")):
        try:
            connect(auth).info()
        except AuthenticationException:
            pass
        else:
            raise AssertionError("%r was let in" % (auth,))
    sec = client.transport.perform_request
    r = sec("PUT", "/_plugins/_security/api/roles/py_writer", body={
        "cluster_permissions": ["cluster_monitor"],
        "index_permissions": [{"index_patterns": ["py-own-*"], "allowed_actions": ["crud", "create_index"]}],
    })
    assert r["status"] == "CREATED", r
    r = sec("PUT", "/_plugins/_security/api/internalusers/py_user", body={
        "password": "py-user-password", "opendistro_security_roles": ["py_writer"]})
    assert r["status"] == "CREATED", r
    user = connect(("py_user", "py-user-password"))
    assert user.transport.perform_request("GET", "/_plugins/_security/authinfo")["user_name"] == "py_user"
    user.index(index="py-own-1", id="1", body={"a": 1}, refresh=True)
    assert user.count(index="py-own-1")["count"] == 1
    try:
        user.index(index=INDEX, id="x", body={"a": 1})
    except AuthorizationException:
        pass
    else:
        raise AssertionError("py_user wrote to %s" % INDEX)
    r = helpers.bulk(user, [{"_index": INDEX, "_id": "y", "a": 1},
                            {"_index": "py-own-1", "_id": "2", "a": 2}], raise_on_error=False,
                     refresh=True)
    assert r[0] == 1 and r[1][0]["index"]["status"] == 403, r
    # A search over everything returns only what the user may read.
    assert set(h["_index"] for h in user.search(index="*", body={"size": 100})["hits"]["hits"]) == {"py-own-1"}
    key = user.transport.perform_request("POST", "/_security/api_key", body={"name": "py-key"})
    keyed = OpenSearch(hosts=[{"host": "127.0.0.1", "port": PORT}],
                       headers={"authorization": "ApiKey " + key["encoded"]}, max_retries=0)
    assert keyed.count(index="py-own-1")["count"] == 2
    client.indices.delete(index="py-own-1")


def check_delete():
    r = client.indices.delete(index=INDEX)
    assert r["acknowledged"] is True, r
    assert not client.indices.exists(index=INDEX)


CHECKS = [
    check_info,
    check_create,
    check_bulk,
    check_refresh_count,
    check_match,
    check_term,
    check_range,
    check_bool_sort,
    check_count_query,
    check_get_and_missing,
    check_aliases_and_rollover,
    check_dashboards_shape,
    check_scan_and_pit,
    check_by_query,
    check_update,
    check_security,
    check_delete,
]

# Everything after these depends on them.
STOP_ON_FAILURE = {check_info, check_create, check_bulk}


def main():
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print("FAIL %s" % check.__name__)
            traceback.print_exc()
            if check in STOP_ON_FAILURE:
                print("stopping: later checks need %s" % check.__name__)
                break
        else:
            passed += 1
            print("ok   %s" % check.__name__)
        sys.stdout.flush()
    print("opensearch-py: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
