#!/usr/bin/env python3
"""Vector store ingestion throughput and search latency, against figures of the same run.

    cd /path/to/assistants-bridge && .venv/bin/python bench/retrieval.py [--files 40]
        [--chunks-per-file 30] [--queries 600] [--database-url URL] [--keep]

It starts the bridge with `gunicorn -c gunicorn.conf.py` (as `make run` does: the offline
engine, rate limits too high to refuse anything, INGEST_WORKERS at its default) on a fresh
registry: SQLite in a temporary folder, or with --database-url a new database on that
PostgreSQL server, dropped afterwards. It generates --files text files from the sentences of
the shipped test corpus (tests/corpus), drawn with a fixed seed (file n mostly from document
n, so that a question's topic words are in a few files and its common words in most), each
long enough for --chunks-per-file chunks under OpenAI's `auto` strategy (800 tokens, 400
overlapping): the store holds files x chunks-per-file chunks (1,200 by default; the count is
printed). Then:

1. uploads them with `POST /v1/files`, timed: the baseline for ingestion;
2. creates one store with all of them (`POST /v1/vector_stores` with `file_ids`) and polls
   `GET /v1/vector_stores/{id}` every 20 ms until no file is `in_progress`: ingestion
   throughput is the text indexed (the files' `usage_bytes`, MB of 10^6 bytes) over the time
   from sending the create to the first answer saying `completed`. The worker that took the
   create ingests every file, in its INGEST_WORKERS threads; with the overlap of `auto`, each
   word is indexed in two chunks;
3. sends --queries searches (`POST /v1/vector_stores/{id}/search`, the corpus's questions in
   turn, default `max_num_results`) alternating with as many `GET /v1/vector_stores/{id}` (an
   owned read: the baseline), one client on one keep-alive connection, after a warm-up of
   both; p50 and p99 of each, and their ratio.

Machines here are noisy, so only ratios of figures measured in the same run mean anything, and
nothing asserts a timing. Exit status 0, 1 when the server did not start or a request failed,
130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for bridge and tests.corpus

from overhead import NO_REFUSALS, Server, table  # noqa: E402
from worker_models import (JWT_SECRET, Interrupted, Registries, StartFailed,  # noqa: E402
                           interrupt, mint_token, shielded)

from bridge.retrieval import chunking, extract, index  # noqa: E402
from tests import corpus  # noqa: E402

USER = "bench-user"
SEED = 20261210
POLL_SECONDS = 0.02
WARM_ROUNDS = 20
INGEST_TIMEOUT = 600.0
AUTO = chunking.AUTO["static"]


class RequestFailed(Exception):
    """A request the benchmark needs answered 200 was not."""


# ---- the generated corpus ------------------------------------------------------------------

def corpus_sentences() -> list[list[str]]:
    """The sentences of each document of the shipped corpus, as extracted."""
    documents = []
    for name, data in sorted(corpus.documents().items()):
        text = extract.extract_text(name, data, 1 << 24)
        documents.append([" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)
                          if len(s.split()) >= 4])
    return documents


def generated_files(files: int, chunks_per_file: int) -> dict[str, bytes]:
    """`files` text files, each of exactly enough tokens for `chunks_per_file` chunks under the
    auto strategy: file n is about the corpus's document n (modulo their number), three
    sentences in four drawn from it and the rest from any document, so that a question's
    topic words are in a few of the files and its common words in most."""
    rng = random.Random(SEED)
    documents = corpus_sentences()
    everything = [sentence for sentences in documents for sentence in sentences]
    step = AUTO["max_chunk_size_tokens"] - AUTO["chunk_overlap_tokens"]
    tokens = AUTO["max_chunk_size_tokens"] + step * (chunks_per_file - 1)
    made = {}
    for number in range(files):
        topic = documents[number % len(documents)]
        words: list[str] = []
        sentences = 0
        while len(words) < tokens:
            sentence = rng.choice(topic if rng.random() < 0.75 else everything).split()
            sentences += 1
            if sentences % 6 == 0:
                sentence[-1] += "\n\n"
            words += sentence
        made[f"generated-{number:03d}.txt"] = " ".join(words[:tokens]).encode()
    return made


def chunks_of(files: dict[str, bytes]) -> list[str]:
    return [chunk for data in files.values() for chunk in chunking.chunks(
        data.decode(), AUTO["max_chunk_size_tokens"], AUTO["chunk_overlap_tokens"])]


def matched_share(chunks: list[str]) -> float:
    """The mean share of the chunks that hold a word of a question (the words as the bridge
    reads a query, matched exactly: the databases' stemming matches more)."""
    words_of = [set(index.query_terms([chunk.lower()])[0]) for chunk in chunks]
    shares = []
    for question, _ in corpus.questions():
        words = set(index.query_terms([question])[0])
        shares.append(sum(1 for held in words_of if held & words) / len(chunks))
    return sum(shares) / len(shares)


# ---- HTTP --------------------------------------------------------------------------------------

class Client:
    """One keep-alive connection to the bridge, as one user."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = {"Authorization": f"Bearer {mint_token(USER)}"}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> dict:
        self.conn.request(method, path, body=body, headers={**self.auth, **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RequestFailed(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data)

    def post_json(self, path: str, body: dict) -> dict:
        return self.request("POST", path, json.dumps(body).encode(),
                            {"Content-Type": "application/json"})

    def upload(self, name: str, data: bytes) -> str:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
                f"assistants\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n").encode() + data + (
                f"\r\n--{boundary}--\r\n").encode()
        return self.request("POST", "/v1/files", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"})["id"]

    def timed(self, method: str, path: str, body: dict | None = None) -> tuple[float, dict]:
        started = time.perf_counter()
        answer = (self.post_json(path, body) if method == "POST"
                  else self.request(method, path))
        return 1000 * (time.perf_counter() - started), answer

    def close(self) -> None:
        self.conn.close()


# ---- the measurements --------------------------------------------------------------------------

def upload_all(client: Client, files: dict[str, bytes]) -> tuple[list[str], float]:
    started = time.perf_counter()
    ids = [client.upload(name, data) for name, data in files.items()]
    return ids, time.perf_counter() - started


def ingest(client: Client, file_ids: list[str]) -> tuple[str, float, dict]:
    """Create the store with every file; (its id, seconds until completed, the store)."""
    started = time.perf_counter()
    store = client.post_json("/v1/vector_stores", {"name": "bench", "file_ids": file_ids})
    deadline = started + INGEST_TIMEOUT
    while store["file_counts"]["in_progress"]:
        if time.perf_counter() > deadline:
            raise RequestFailed(f"ingestion not finished after {INGEST_TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)
        store = client.request("GET", f"/v1/vector_stores/{store['id']}")
    return store["id"], time.perf_counter() - started, store


def search_and_read(client: Client, store_id: str, queries: int) -> tuple[list[float],
                                                                          list[float], int]:
    """Alternate searches with owned reads of the store; (search ms, read ms, results)."""
    questions = [question for question, _ in corpus.questions()]
    search_path, read_path = f"/v1/vector_stores/{store_id}/search", f"/v1/vector_stores/{store_id}"
    for n in range(WARM_ROUNDS):
        client.post_json(search_path, {"query": questions[n % len(questions)]})
        client.request("GET", read_path)
    searches, reads, results = [], [], 0
    for n in range(queries):
        body = {"query": questions[n % len(questions)]}
        if n % 2:  # alternate which goes first, so neither always follows the other
            reads.append(client.timed("GET", read_path)[0])
        took, page = client.timed("POST", search_path, body)
        searches.append(took)
        results += len(page["data"])
        if not n % 2:
            reads.append(client.timed("GET", read_path)[0])
    return searches, reads, results


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---- the report -------------------------------------------------------------------------------

def report(files: dict[str, bytes], chunks: list[str], upload_seconds: float,
           ingest_seconds: float, store: dict, searches: list[float], reads: list[float],
           results: int, database: str) -> str:
    uploaded_mb = sum(len(data) for data in files.values()) / 1e6
    text_mb = store["usage_bytes"] / 1e6
    ingest_rate, upload_rate = text_mb / ingest_seconds, uploaded_mb / upload_seconds
    s50, s99, r50, r99 = (quantile(searches, 0.5), quantile(searches, 0.99),
                          quantile(reads, 0.5), quantile(reads, 0.99))
    rows = [
        ("ingestion throughput", f"{ingest_rate:.2f} MB/s of text ({text_mb:.2f} MB in "
                                 f"{ingest_seconds:.2f} s)",
         f"upload {upload_rate:.2f} MB/s ({uploaded_mb:.2f} MB in {upload_seconds:.2f} s)",
         f"{ingest_rate / upload_rate:.2f}x"),
        ("search latency p50", f"{s50:.2f} ms", f"owned GET {r50:.2f} ms", f"{s50 / r50:.2f}x"),
        ("search latency p99", f"{s99:.2f} ms", f"owned GET {r99:.2f} ms", f"{s99 / r99:.2f}x"),
    ]
    lines = [
        f"{database}; {len(files)} files, {uploaded_mb:.2f} MB, {len(chunks):,} chunks (auto "
        f"strategy: {AUTO['max_chunk_size_tokens']} tokens, {AUTO['chunk_overlap_tokens']} "
        f"overlapping); {store['file_counts']['completed']} completed, "
        f"{store['file_counts']['failed']} failed",
        f"{len(searches)} searches (the corpus's {len(corpus.questions())} questions in turn) "
        f"alternating with {len(reads)} owned GETs of the store, one client; "
        f"{results / len(searches):.1f} results per search; a question's words are in "
        f"{100 * matched_share(chunks):.0f}% of the chunks on average",
        "",
        table(rows, header=("figure", "vector store", "baseline", "ratio")),
        "",
        f"Ingestion {ingest_rate:.2f} MB/s of text ({ingest_rate / upload_rate:.2f}x the upload "
        f"rate); search over {len(chunks):,} chunks p50 {s50:.2f} ms, p99 {s99:.2f} ms "
        f"({s50 / r50:.2f}x and {s99 / r99:.2f}x an owned GET's {r50:.2f} / {r99:.2f} ms).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure vector store ingestion throughput (MB/s of text, against the "
                    "upload rate) and search latency p50/p99 over a generated corpus (against "
                    "an owned GET), on one server, in the same run.")
    parser.add_argument("--files", type=int, default=40, help="generated files (40)")
    parser.add_argument("--chunks-per-file", type=int, default=30,
                        help="chunks each file makes under the auto strategy (30)")
    parser.add_argument("--queries", type=int, default=600,
                        help="searches measured, as many owned GETs alongside (600)")
    parser.add_argument("--database-url", metavar="URL",
                        help="registry on this PostgreSQL server (a new database, dropped "
                             "after); SQLite in a temporary folder without it")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the log")
    args = parser.parse_args(argv)
    if args.files < 1 or args.chunks_per_file < 1 or args.queries < 2:
        parser.error("--files and --chunks-per-file must be at least 1, --queries at least 2")

    files = generated_files(args.files, args.chunks_per_file)
    chunks = chunks_of(files)
    folder = Path(tempfile.mkdtemp(prefix="bridge-retrieval-"))
    registries = Registries(folder, args.database_url)
    bridge = client = None
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        env = {"DATABASE_URL": registries.new("retrieval"), "JWT_SECRET_KEY": JWT_SECRET,
               "JWT_ALGORITHM": "HS256", "JWT_AUDIENCE": "", "JWT_ISSUER": "",
               "JWT_PUBLIC_KEY": "", "BRIDGE_ENGINE": "offline", "AUTO_MIGRATE": "true",
               "FILE_STORAGE_DIR": str(folder / "files"), "RATE_LIMIT_READS": NO_REFUSALS,
               "RATE_LIMIT_WRITES": NO_REFUSALS, "RATE_LIMIT_RUNS": NO_REFUSALS}
        bridge = Server("bridge", "wsgi:app", env, folder / "bridge.log", "/readyz")
        bridge.start()
        bridge.wait_ready()
        client = Client(bridge.port)
        file_ids, upload_seconds = upload_all(client, files)
        store_id, ingest_seconds, store = ingest(client, file_ids)
        searches, reads, results = search_and_read(client, store_id, args.queries)
    except StartFailed as exc:
        print(f"error: {exc}\n{(folder / 'bridge.log').read_text(errors='replace')[-3000:]}",
              file=sys.stderr)
        return 1
    except RequestFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        return 130
    finally:
        with shielded():
            if client is not None:
                client.close()
            if bridge is not None:
                bridge.stop()
            registries.drop_all()
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(report(files, chunks, upload_seconds, ingest_seconds, store, searches, reads,
                 results, database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
