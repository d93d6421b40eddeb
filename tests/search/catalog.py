"""A small shop catalogue with real-looking dirty HTML descriptions (what storefront exports hold)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: strings of the markup below that must never reach a chunk (">" may: category paths use it)
FORBIDDEN = (
    "#ff6600",
    "#FFF",
    "#1a2b3c",
    "color:",
    "font-family",
    "display:none",
    "{",
    "}",
    "<",
    "/>",
    "h2",
    "&nbsp;",
    "&amp;",
    "&#",
    "class=",
    "div",
    "span",
    "var ",
    "gtag",
    "SEO-HIDDEN",
    "\u200b",
    "\u00ad",
    "\ufeff",
    "margin",
    "Helvetica",
)

PRODUCTS = [
    (
        "Organic Whole Milk",
        "Dairy > Milk",
        "Fresh organic whole milk from grass-fed cows, one gallon, grade A pasteurised.",
    ),
    (
        "Greek Yogurt Plain",
        "Dairy > Yogurt",
        "Thick strained Greek yogurt, plain and unsweetened, high in protein.",
    ),
    (
        "Sourdough Bread Loaf",
        "Bakery > Bread",
        "Crusty sourdough loaf baked daily with a natural starter and sea salt.",
    ),
    (
        "Chocolate Chip Cookies",
        "Bakery > Cookies",
        "Soft baked cookies loaded with semi-sweet chocolate chips.",
    ),
    (
        "Trail Running Shoes",
        "Sports > Footwear",
        "Lightweight trail running shoes with a grippy outsole and breathable mesh.",
    ),
    (
        "Merino Wool Socks",
        "Sports > Apparel",
        "Cushioned merino wool hiking socks that wick moisture and resist odour.",
    ),
    (
        "Espresso Coffee Beans",
        "Pantry > Coffee",
        "Dark roast whole espresso beans with notes of cocoa and caramel.",
    ),
    ("Green Tea Bags", "Pantry > Tea", "Japanese sencha green tea, twenty biodegradable tea bags."),
    (
        "Stainless Steel Kettle",
        "Kitchen > Appliances",
        "Electric kettle, 1.7 litres, boils in three minutes, auto shut-off.",
    ),
    ("Cast Iron Skillet", "Kitchen > Cookware", "Pre-seasoned cast iron frying pan, ten inch, oven safe."),
]


def dirty_html(name: str, desc: str, n: int) -> str:
    return f"""<!DOCTYPE html><html><head><style>.promo{{color:#ff6600;font-family:Helvetica}}
    body {{ margin: 0 }}</style><script>var gtag = function(){{}}; gtag('sku-{n}');</script></head>
    <body><div class="promo" style="color:#1a2b3c;background:#FFF;margin:4px">
    <h2 style="font-family:Helvetica">{name}&nbsp;&ndash; batch&#160;{n}</h2>
    <p>{desc} Fish &amp; chips friendly&hellip; caf&eacute; quality.</p>
    <span style="display: none">SEO-HIDDEN cheap best buy discount</span>
    <div hidden>SEO-HIDDEN</div><div aria-hidden="true">SEO-HIDDEN</div>
    <ul><li>Item\u200b no.\u00a0{n}</li><li>soft\u00adhyphen\ufeff text</li></ul>
    <!-- SEO-HIDDEN comment --><noscript>SEO-HIDDEN</noscript><br/>
    <table><tr><td>Weight</td><td>{100 + n} g</td></tr></table></div></body></html>"""


def write_catalog(path: Path, copies: int = 1) -> dict[int, dict]:
    """``copies`` variants of each product (distinct texts); returns item_id -> fields."""
    rows: dict[int, dict] = {}
    for c in range(copies):
        for p, (name, cat, desc) in enumerate(PRODUCTS):
            item = 1000 + c * len(PRODUCTS) + p
            rows[item] = {
                "item_id": item,
                "category": cat,
                "title": f"{name} {c}",
                "description": dirty_html(name, desc, c),
                "attributes": json.dumps({"colour": "<b>navy</b>", "sizes": ["S", "M"]}),
                "available": item % 7 != 0,
                "image_uri": f"oss://shop/img/{item}.jpg",
            }
    table = pa.table({k: [r[k] for r in rows.values()] for k in next(iter(rows.values()))})
    table = table.set_column(0, "item_id", pa.array(table["item_id"].to_pylist(), pa.int64()))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return rows
