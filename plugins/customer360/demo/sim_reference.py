"""Static vocabularies of the simulated retailer and its reference data: stores, products.

Everything here is small (dozens of stores, hundreds of products); the per-person and
per-event arrays index into these tables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from customer360.demo.sim_config import SimulationConfig

COUNTRIES = np.array(["CN", "HK", "JP", "GB", "US"])
COUNTRY_TZ = {"CN": "Asia/Shanghai", "HK": "Asia/Hong_Kong", "JP": "Asia/Tokyo",
              "GB": "Europe/London", "US": "America/New_York"}
# Rough UTC offset of each country's customers, only to shape the hour of their web visits.
COUNTRY_UTC_OFFSET_H = np.array([8, 8, 9, 0, -5])
COUNTRY_CURRENCY = {"CN": "CNY", "HK": "HKD", "JP": "JPY", "GB": "GBP", "US": "USD"}
# List prices are in CNY; stores abroad charge the converted price.
FX_FROM_CNY = {"CNY": 1.0, "HKD": 1.08, "JPY": 20.8, "GBP": 0.11, "USD": 0.14}
COUNTRY_LOCALES = {"CN": ["zh-CN", "zh-CN", "zh-CN", "en-US"], "HK": ["zh-HK", "en-HK"],
                   "JP": ["ja-JP", "ja-JP", "en-US"], "GB": ["en-GB"], "US": ["en-US", "en-US", "es-US"]}
COUNTRY_EMAIL_DOMAINS = {
    "CN": ["qq.com", "163.com", "126.com", "sina.com", "gmail.com", "outlook.com"],
    "HK": ["gmail.com", "yahoo.com.hk", "outlook.com", "netvigator.com"],
    "JP": ["gmail.com", "yahoo.co.jp", "docomo.ne.jp", "outlook.jp"],
    "GB": ["gmail.com", "outlook.com", "btinternet.com", "yahoo.co.uk"],
    "US": ["gmail.com", "yahoo.com", "outlook.com", "icloud.com"],
}

# (english city, chinese city, english region, chinese region, country, english name, chinese name)
STORE_SITES = {
    "Asia/Shanghai": [
        ("Shanghai", "上海", "Shanghai", "上海", "CN", "Shanghai Nanjing Road", "上海南京路店"),
        ("Beijing", "北京", "Beijing", "北京", "CN", "Beijing Wangfujing", "北京王府井店"),
        ("Guangzhou", "广州", "Guangdong", "广东", "CN", "Guangzhou Tianhe", "广州天河店"),
        ("Shenzhen", "深圳", "Guangdong", "广东", "CN", "Shenzhen Futian", "深圳福田店"),
        ("Hangzhou", "杭州", "Zhejiang", "浙江", "CN", "Hangzhou West Lake", "杭州西湖店"),
        ("Chengdu", "成都", "Sichuan", "四川", "CN", "Chengdu Chunxi Road", "成都春熙路店"),
        ("Nanjing", "南京", "Jiangsu", "江苏", "CN", "Nanjing Xinjiekou", "南京新街口店"),
        ("Wuhan", "武汉", "Hubei", "湖北", "CN", "Wuhan Jianghan Road", "武汉江汉路店"),
    ],
    "Asia/Hong_Kong": [
        ("Hong Kong", "香港", "Hong Kong Island", "香港岛", "HK", "Hong Kong Central", "香港中环店"),
        ("Hong Kong", "香港", "Kowloon", "九龙", "HK", "Tsim Sha Tsui", "尖沙咀店"),
    ],
    "Asia/Tokyo": [
        ("Tokyo", "东京", "Tokyo", "东京都", "JP", "Tokyo Ginza", "东京银座店"),
        ("Osaka", "大阪", "Osaka", "大阪府", "JP", "Osaka Umeda", "大阪梅田店"),
    ],
    "Europe/London": [
        ("London", "伦敦", "England", "英格兰", "GB", "London Oxford Street", "伦敦牛津街店"),
        ("Manchester", "曼彻斯特", "England", "英格兰", "GB", "Manchester Arndale", "曼彻斯特店"),
    ],
    "America/New_York": [
        ("New York", "纽约", "NY", "纽约州", "US", "New York SoHo", "纽约苏豪店"),
        ("Boston", "波士顿", "MA", "马萨诸塞州", "US", "Boston Newbury Street", "波士顿店"),
    ],
}
ZONE_ORDER = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Tokyo", "Europe/London", "America/New_York"]
_ZONE_SHARE = [0.5, 0.15, 0.15, 0.1, 0.1]

PAYMENT_METHODS_EN = {"CN": ["WECHAT_PAY", "ALIPAY", "UNIONPAY_CARD", "CASH"],
                      "HK": ["OCTOPUS", "CARD", "CASH", "ALIPAY_HK"],
                      "JP": ["CARD", "CASH", "PAYPAY", "SUICA"],
                      "GB": ["CARD", "CONTACTLESS", "CASH"],
                      "US": ["CARD", "CONTACTLESS", "CASH"]}
# What a mainland till configured in Chinese prints (GB18030 stores).
PAYMENT_METHODS_ZH = ["微信支付", "支付宝", "银联卡", "现金"]

CATEGORIES = ["apparel", "shoes", "accessories", "beauty", "home", "electronics"]
_CATEGORY_ITEMS = {  # (english noun, chinese noun, median CNY price)
    "apparel": [("Linen Shirt", "亚麻衬衫", 299), ("Wool Coat", "羊毛大衣", 1299), ("Silk Dress", "真丝连衣裙", 899),
                ("Cotton Tee", "纯棉T恤", 99), ("Denim Jeans", "牛仔裤", 399), ("Down Jacket", "羽绒服", 999)],
    "shoes": [("Leather Loafers", "真皮乐福鞋", 699), ("Running Shoes", "跑步鞋", 599),
              ("Canvas Sneakers", "帆布鞋", 259), ("Ankle Boots", "短靴", 799)],
    "accessories": [("Silk Scarf", "真丝围巾", 359), ("Leather Belt", "真皮腰带", 299),
                    ("Tote Bag", "托特包", 499), ("Wool Beanie", "羊毛帽", 129), ("Sunglasses", "太阳镜", 459)],
    "beauty": [("Face Serum", "精华液", 389), ("Lip Balm", "润唇膏", 69), ("Hand Cream", "护手霜", 89),
               ("Eau de Parfum", "香水", 799), ("Sheet Masks", "面膜", 129)],
    "home": [("Ceramic Mug", "陶瓷马克杯", 79), ("Linen Bedding", "亚麻床品", 1099), ("Scented Candle", "香薰蜡烛", 159),
             ("Tea Set", "茶具套装", 459), ("Cashmere Throw", "羊绒毯", 1599)],
    "electronics": [("Wireless Earbuds", "无线耳机", 699), ("Power Bank", "充电宝", 199),
                    ("Smart Watch", "智能手表", 1499), ("Bluetooth Speaker", "蓝牙音箱", 399)],
}
_ADJECTIVES = [("Classic", "经典"), ("Essential", "基础款"), ("Premium", "高级"), ("Slim", "修身"),
               ("Everyday", "日常"), ("Limited", "限量"), ("Organic", "有机"), ("Travel", "旅行")]
_BRANDS = {"apparel": ["Lumen", "North Thread", "Mori"], "shoes": ["Stride", "Lumen"],
           "accessories": ["Lumen", "Atelier Ye"], "beauty": ["Qing", "Dew Lab"],
           "home": ["Hearth", "Lumen Home"], "electronics": ["Volt", "Sonic Ya"]}

SITE = "https://shop.lumen.example"
USER_AGENTS = np.array([
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36 MicroMessenger/8.0.47",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
])
# (source, medium, name); index 0 means "no campaign".
CAMPAIGNS = [(None, None, None), ("wechat", "social", "spring_launch"), ("baidu", "cpc", "brand_cn"),
             ("google", "cpc", "brand"), ("newsletter", "email", "weekly_digest"),
             ("xiaohongshu", "social", "creator_picks")]
# A/B tests the shop runs for the whole period, two variations each, people split 50/50
# (experiment_id, experiment_name); sim_config's experiment_* knobs set their true effects.
EXPERIMENTS = [("exp_checkout_copy", "Checkout button copy"),
               ("exp_free_shipping", "Free shipping banner")]
VARIATIONS = [("control", "Control"), ("treatment", "Treatment")]
REFERRERS = ["", "https://www.baidu.com/", "https://www.google.com/", "https://weixin.qq.com/",
             "https://www.xiaohongshu.com/"]


@dataclass(frozen=True)
class Stores:
    store_id: np.ndarray      # str
    country: np.ndarray       # str (ISO alpha-2)
    timezone: np.ndarray      # str (IANA)
    currency: np.ndarray      # str
    gb18030: np.ndarray       # bool
    rows: list[dict]          # stores.csv rows

    def __len__(self) -> int:
        return len(self.store_id)


def build_stores(cfg: SimulationConfig) -> Stores:
    """Stores spread over the first ``store_timezones`` zones, a share of Chinese ones in GB18030."""
    rng = cfg.rng("stores")
    zones = ZONE_ORDER[:cfg.store_timezones]
    share = np.array(_ZONE_SHARE[:len(zones)]) / sum(_ZONE_SHARE[:len(zones)])
    counts = np.floor(share * cfg.stores).astype(int)
    if cfg.stores >= len(zones):
        counts = np.maximum(counts, 1)
    while counts.sum() > cfg.stores:
        counts[np.argmax(counts)] -= 1
    order = np.argsort(-(share * cfg.stores - counts), kind="stable")
    i = 0
    while counts.sum() < cfg.stores:
        counts[order[i % len(zones)]] += 1
        i += 1
    sites = []
    for zone, n in zip(zones, counts):
        pool = STORE_SITES[zone]
        for k in range(n):
            site = pool[k % len(pool)]
            suffix = "" if k < len(pool) else f" {k // len(pool) + 1}"
            sites.append((zone, site, suffix))
    cn_idx = [i for i, (_, site, _) in enumerate(sites) if site[4] == "CN"]
    n_gb = int(round(cfg.gb18030_store_share * len(cn_idx)))
    if cfg.gb18030_store_share > 0 and cn_idx:
        n_gb = max(n_gb, 1)
    gb = set(rng.choice(cn_idx, size=n_gb, replace=False).tolist()) if n_gb else set()
    rows = []
    for i, (zone, (city, city_zh, region, region_zh, country, name, name_zh), suffix) in enumerate(sites):
        opened = cfg.start - dt.timedelta(days=int(rng.integers(120, 3650)))
        chinese = i in gb
        rows.append({
            "store_id": f"S{i + 1:03d}",
            "name": (name_zh + suffix.replace(" ", "")) if chinese else name + suffix,
            "city": city_zh if chinese else city,
            "region": region_zh if chinese else region,
            "country": country,
            "timezone": zone,
            "file_encoding": "GB18030" if chinese else "UTF-8",
            "opened_on": opened.isoformat(),
        })
    return Stores(
        store_id=np.array([r["store_id"] for r in rows]),
        country=np.array([r["country"] for r in rows]),
        timezone=np.array([r["timezone"] for r in rows]),
        currency=np.array([COUNTRY_CURRENCY[r["country"]] for r in rows]),
        gb18030=np.array([r["file_encoding"] == "GB18030" for r in rows]),
        rows=rows,
    )


@dataclass(frozen=True)
class Products:
    sku: np.ndarray           # str
    name: np.ndarray          # str
    category: np.ndarray      # int index into CATEGORIES
    list_price: np.ndarray    # float, CNY
    popularity: np.ndarray    # float, sums to 1 within each category
    rows: list[dict]

    def __len__(self) -> int:
        return len(self.sku)


def build_products(cfg: SimulationConfig) -> Products:
    """A catalogue: every category present, a third of the names in Chinese, Zipf popularity."""
    rng = cfg.rng("products")
    n = cfg.products
    cat = np.arange(n) % len(CATEGORIES)
    rows, names, prices = [], [], []
    for i in range(n):
        c = CATEGORIES[cat[i]]
        items = _CATEGORY_ITEMS[c]
        noun_en, noun_zh, median = items[rng.integers(len(items))]
        adj_en, adj_zh = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
        chinese = rng.random() < 0.33
        name = f"{adj_zh}{noun_zh}" if chinese else f"{adj_en} {noun_en}"
        # Shop prices end in 9: 129.00, 1299.00
        price = max(9.0, np.round(median * rng.lognormal(0, 0.25) / 10) * 10 - 1)
        brands = _BRANDS[c]
        rows.append({"sku": f"SKU{10001 + i}", "name": name, "category": c,
                     "brand": brands[rng.integers(len(brands))], "list_price": f"{price:.2f}"})
        names.append(name)
        prices.append(price)
    popularity = np.zeros(n)
    for c in range(len(CATEGORIES)):
        idx = np.flatnonzero(cat == c)
        w = 1.0 / np.arange(1, len(idx) + 1) ** 0.9
        popularity[rng.permutation(idx)] = w / w.sum()
    return Products(sku=np.array([r["sku"] for r in rows]), name=np.array(names), category=cat,
                    list_price=np.array(prices), popularity=popularity, rows=rows)


def pick_products(products: Products, taste: np.ndarray, u_cat: np.ndarray,
                  u_item: np.ndarray) -> np.ndarray:
    """Vectorized draw of one product per row: a category from the row's taste vector, then a
    product within it by popularity. ``taste`` is (rows x categories); ``u_*`` uniforms."""
    cat = (np.cumsum(taste, axis=1) < u_cat[:, None]).sum(axis=1)
    cat = np.minimum(cat, len(CATEGORIES) - 1)
    out = np.empty(len(cat), dtype=np.int64)
    for c in range(len(CATEGORIES)):
        rows = np.flatnonzero(cat == c)
        if not len(rows):
            continue
        idx = np.flatnonzero(products.category == c)
        cdf = np.cumsum(products.popularity[idx])
        pos = np.minimum(np.searchsorted(cdf, u_item[rows] * cdf[-1]), len(idx) - 1)
        out[rows] = idx[pos]
    return out


# --- names -----------------------------------------------------------------------------------

CN_SURNAMES = [("王", "Wang"), ("李", "Li"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
               ("杨", "Yang"), ("黄", "Huang"), ("赵", "Zhao"), ("吴", "Wu"), ("周", "Zhou"),
               ("徐", "Xu"), ("孙", "Sun"), ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu"),
               ("郭", "Guo"), ("何", "He"), ("林", "Lin"), ("罗", "Luo"), ("高", "Gao")]
CN_GIVEN_F = [("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"), ("丽", "Li"),
              ("艳", "Yan"), ("娟", "Juan"), ("秀英", "Xiuying"), ("霞", "Xia"), ("婷", "Ting"),
              ("雪", "Xue"), ("慧", "Hui")]
CN_GIVEN_M = [("伟", "Wei"), ("强", "Qiang"), ("磊", "Lei"), ("军", "Jun"), ("洋", "Yang"),
              ("勇", "Yong"), ("杰", "Jie"), ("涛", "Tao"), ("明", "Ming"), ("超", "Chao"),
              ("浩", "Hao"), ("鹏", "Peng")]
HK_SURNAMES = [("陈", "Chan"), ("黄", "Wong"), ("李", "Lee"), ("张", "Cheung"), ("刘", "Lau"),
               ("吴", "Ng"), ("何", "Ho"), ("梁", "Leung")]
JP_SURNAMES = ["Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
               "Kobayashi", "Kato"]
JP_GIVEN_F = ["Yui", "Hina", "Sakura", "Aoi", "Mei", "Yuna"]
JP_GIVEN_M = ["Haruto", "Ren", "Sota", "Riku", "Yuto", "Kaito"]
EN_SURNAMES = ["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas",
               "Walker", "Wright", "Garcia", "Miller", "Clarke", "Hughes"]
EN_GIVEN_F = ["Ann", "Emma", "Olivia", "Sophie", "Grace", "Chloe", "Emily", "Hannah", "Lucy", "Mia"]
EN_GIVEN_M = ["James", "Oliver", "Jack", "Harry", "George", "Daniel", "Thomas", "Samuel", "Ben",
              "Leo"]

# --- CRM text --------------------------------------------------------------------------------

TICKET_CATEGORIES = ["billing", "delivery", "product", "account", "other"]
TICKET_TEXT = {
    "billing": (("Charged twice for my order", "My card was charged twice for the same order. Please refund one of them."),
                ("订单重复扣款", "同一个订单被扣了两次款，请退还一笔。")),
    "delivery": (("Where is my parcel?", "My order has not arrived yet and the tracking has not moved for days."),
                 ("包裹还没到", "我的订单还没有送到，物流信息好几天没有更新了。")),
    "product": (("Item arrived damaged", "The item I received is damaged. I would like a replacement or a refund."),
                ("商品有质量问题", "收到的商品有破损，希望换货或者退款。")),
    "account": (("Cannot log in", "I cannot log in to my account, the reset link does not work."),
                ("无法登录账户", "我登录不了账户，重置密码的链接也打不开。")),
    "other": (("Question about store hours", "Are you open on public holidays? I could not find it on the site."),
              ("门店营业时间咨询", "请问节假日门店营业吗？网站上没有找到。")),
}
PII_SENTENCE = ("You can reach me at {contact}.", "请联系我：{contact}。")
# Personal data customers also put in tickets: a greeting with the agent's or their own name,
# a resident identity number (for an invoice); {name} and {id} are filled in per ticket.
PII_EXTRA = (("Dear {name}, please help.", "Hi, my name is in the order. Dear {name}, thanks."),
             ("您好，{name}，麻烦处理一下。", "我的身份证号是{id}，请开发票。"))
GREETED_NAMES = (("Ann Lee", "Tom Wang", "Maria Chen"), ("李娜", "王芳", "陈美玲"))

# Survey comments: sentiment band -> [(true topic, english, chinese)]. The true sentiment of a
# comment is its band's (bad: negative, mid: neutral, good: positive); "general" has no topic.
COMMENTS = {
    "bad": [("delivery", "Delivery took far too long.", "送货太慢了，等了一个多星期。"),
            ("delivery", "My parcel arrived late and the box was crushed.", "包裹迟到了，箱子还被压坏了。"),
            ("quality", "The quality is not what I expected.", "质量和描述不符，很失望。"),
            ("quality", "The shirt fell apart after one wash, poor quality.", "衣服洗了一次就坏了，质量太差。"),
            ("service", "Customer service never answered me.", "客服一直没有回复我，态度很差。"),
            ("service", "The support agent was rude and unhelpful.", "客服态度恶劣，问题也没解决。"),
            ("price", "Far too expensive for what you get.", "价格太贵了，不值这个钱。"),
            ("store", "The store was messy and the staff ignored me.", "门店很乱，店员也不理人。"),
            ("general", "Very disappointed with my order.", "这次购物很失望。")],
    "mid": [("delivery", "Good product but shipping was slow.", "产品不错，但是物流有点慢。"),
            ("price", "Fine, but the price is a bit high.", "还行，就是价格有点贵。"),
            ("quality", "Quality is average, nothing special.", "质量一般，没什么特别的。"),
            ("store", "The store is okay, a bit small.", "门店还可以，就是小了点。"),
            ("general", "It was okay.", "还可以，一般般。")],
    "good": [("general", "Love it, will buy again!", "非常喜欢，还会回购！"),
             ("delivery", "Great quality and fast delivery.", "质量很好，发货也快。"),
             ("delivery", "Delivery was quick and the packaging was perfect.", "送货很快，包装也很好。"),
             ("store", "Friendly staff in the store.", "门店店员很热情。"),
             ("quality", "Exactly as described, very happy with the quality.", "和描述一致，质量很满意。"),
             ("service", "Customer service solved my problem quickly, thank you.", "客服很快帮我解决了问题，谢谢。"),
             ("price", "Great value for the price.", "物美价廉，很划算。")],
}
COMMENT_SENTIMENT = {"bad": "negative", "mid": "neutral", "good": "positive"}
# Tickets: category -> (true topic, true sentiment); a question about opening hours is neutral.
TICKET_TRUTH = {"billing": ("billing", "negative"), "delivery": ("delivery", "negative"),
                "product": ("quality", "negative"), "account": ("account", "negative"),
                "other": ("store", "neutral")}
