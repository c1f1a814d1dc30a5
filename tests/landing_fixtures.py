"""Small hand-made landing folders (docs/sources.md layout) for the validator and loader tests."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from pathlib import Path

POS_COLUMNS = ["transaction_id", "line_no", "store_id", "business_date", "txn_ts", "txn_type",
               "loyalty_id", "customer_phone", "customer_email", "sku", "quantity", "unit_price",
               "discount_amount", "line_amount", "currency", "payment_method"]
STORES_COLUMNS = ["store_id", "name", "city", "region", "country", "timezone", "file_encoding",
                  "opened_on"]
PRODUCTS_COLUMNS = ["sku", "name", "category", "brand", "list_price"]

STORES = [
    {"store_id": "SH01", "name": "上海南京路店", "city": "上海", "region": "华东", "country": "CN",
     "timezone": "Asia/Shanghai", "file_encoding": "GB18030", "opened_on": "2019-05-01"},
    {"store_id": "LN01", "name": "London Soho", "city": "London", "region": "UK",
     "country": "GB", "timezone": "Europe/London", "file_encoding": "UTF-8",
     "opened_on": "2021-03-15"},
]
PRODUCTS = [
    {"sku": "SKU-1", "name": "绿茶 Green tea", "category": "tea", "brand": "Leaf",
     "list_price": "25.00"},
    {"sku": "SKU-2", "name": "Mug", "category": "home", "brand": "Clay", "list_price": "60.5"},
]


def iso(ts: dt.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def event(message_id: str, day: dt.date, *, type: str = "page", hour: int = 10,
          **fields) -> dict:
    """A valid Segment event that happened on ``day``; keyword fields override or add."""
    ts = dt.datetime.combine(day, dt.time(hour, 0))
    ev = {"messageId": message_id, "type": type, "anonymousId": f"anon-{message_id}",
          "userId": None, "timestamp": iso(ts), "receivedAt": iso(ts + dt.timedelta(seconds=2)),
          "context": {"page": {"url": "https://shop.example.com/", "path": "/",
                               "referrer": None, "title": "首页"}, "locale": "zh-CN"},
          "properties": {}}
    if type == "track":
        ev["event"] = "Product Viewed"
    ev.update(fields)
    return ev


def order_completed(message_id: str, day: dt.date, order_id: str = "o-1") -> dict:
    return event(message_id, day, type="track", event="Order Completed", userId="1042",
                 properties={"order_id": order_id, "revenue": 85.0, "currency": "CNY",
                             "products": [{"sku": "SKU-1", "quantity": 1, "price": 25.0},
                                          {"sku": "SKU-2", "quantity": 1, "price": 60.0}]})


def web_part_path(landing: Path, day: dt.date, part: int) -> Path:
    return landing / "web" / "events" / f"date={day.isoformat()}" / f"part-{part:04d}.jsonl.gz"


def _lines_bytes(lines: list[dict | str]) -> bytes:
    text = "".join((json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else x) + "\n"
                   for x in lines)
    return text.encode("utf-8")


def write_web_part(landing: Path, day: dt.date, part: int, lines: list[dict | str]) -> Path:
    """A part file; dict lines are JSON-encoded, str lines are written as they are."""
    path = web_part_path(landing, day, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_lines_bytes(lines)))
    return path


def write_truncated_web_part(landing: Path, day: dt.date, part: int,
                             lines: list[dict | str]) -> Path:
    """A part file cut short mid gzip stream, as when a copy is interrupted."""
    path = write_web_part(landing, day, part, lines)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def write_corrupt_web_part(landing: Path, day: dt.date, part: int) -> Path:
    path = web_part_path(landing, day, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not gzip data\n")
    return path


def csv_text(columns: list[str], rows: list[dict | str]) -> str:
    """CSV with a header; dict rows are written by the csv module, str rows as they are."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, str):
            buf.write(row + "\n")
        else:
            writer.writerow([row.get(c, "") for c in columns])
    return buf.getvalue()


def write_reference(landing: Path, stores: list[dict] | None = None,
                    products: list[dict] | None = None) -> None:
    ref = landing / "pos" / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    (ref / "stores.csv").write_text(csv_text(STORES_COLUMNS, stores or STORES), encoding="utf-8")
    (ref / "products.csv").write_text(csv_text(PRODUCTS_COLUMNS, products or PRODUCTS),
                                      encoding="utf-8")


def pos_row(store: str, day: dt.date, txn: str, line_no: int = 1, **fields) -> dict:
    """A valid line item of ``store``'s file for ``day``; keyword fields override any column."""
    row = {"transaction_id": txn, "line_no": str(line_no), "store_id": store,
           "business_date": day.isoformat(), "txn_ts": f"{day.isoformat()} 10:15:00",
           "txn_type": "SALE", "loyalty_id": "", "customer_phone": "", "customer_email": "",
           "sku": "SKU-1", "quantity": "2", "unit_price": "25.00", "discount_amount": "0.00",
           "line_amount": "50.00", "currency": "CNY", "payment_method": "cash"}
    row.update(fields)
    return row


def pos_path(landing: Path, day: dt.date, store_id: str) -> Path:
    return landing / "pos" / f"date={day.isoformat()}" / f"store_{store_id}.csv"


def write_pos_file(landing: Path, day: dt.date, store_id: str, rows: list[dict | str], *,
                   encoding: str = "utf-8", columns: list[str] | None = None,
                   mtime_offset: int = 0) -> Path:
    path = pos_path(landing, day, store_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_text(columns or POS_COLUMNS, rows).encode(encoding))
    if mtime_offset:  # a rewrite within the same clock tick must still look changed
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + mtime_offset * 10**9))
    return path


def _read_parquet(files: list[Path]) -> list[dict]:
    import duckdb

    if not files:
        return []
    con = duckdb.connect()
    try:
        cur = con.execute("SELECT * FROM read_parquet(?, union_by_name = true, "
                          "hive_partitioning = false)", [[str(f) for f in files]])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def read_raw(settings, source: str, entity: str) -> list[dict]:
    """Every row of every raw batch of ``source/entity``."""
    return _read_parquet(sorted(settings.lake_raw.glob(f"{source}/{entity}/load_date=*/*.parquet")))


def read_quarantine(settings, source: str, entity: str) -> list[dict]:
    return _read_parquet(sorted(settings.quarantine.glob(
        f"{source}/{entity}/load_date=*/*.parquet")))


def batch_files(settings, source: str, entity: str) -> list[Path]:
    return sorted(settings.lake_raw.glob(f"{source}/{entity}/load_date=*/*.parquet"))


def read_reference_csv(path: Path):
    """A reference file (stores.csv, products.csv) as a DataFrame of text, decoded as the POS
    loader decodes it: they carry no encoding column, and tills write them in their own."""
    import pandas as pd

    from customer360.ingest.landing.duck import python_encoding
    from customer360.ingest.landing.lines import sniff_encoding

    raw = path.read_bytes()
    encoding = python_encoding(sniff_encoding(raw, None).read_as)
    return pd.read_csv(io.StringIO(raw.decode(encoding).lstrip("\ufeff")), dtype=str)
