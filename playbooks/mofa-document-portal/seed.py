#!/usr/bin/env python3
"""Seed the portal's state once (playbooks/mofa-document-portal/portal.yml runs it with `creates:`).

  seed.py CONSULATE LEAKED_PASSWORD SECRET_DOC NEXT_SERIAL PARIS_IP

CONSULATE is the team's consulate account that kept a legacy exemption from the client-certificate
requirement (its password is one from a public leak); SECRET_DOC the id of its classified document
that the attacker will pull; NEXT_SERIAL the serial the portal's CA issues next. Nothing here is
random or time-stamped: the files are the same every time for the same arguments.
"""

import json
import sys

sys.path.insert(0, "/opt/mofa-portal")
import portalstore as ps  # noqa: E402

EMBASSIES = [  # account, mission, password, certificate serial
    ("dsq-paris", "Đại sứ quán Việt Nam tại Pháp", "Paris#Vn-2025!sync", "5E07A1C3944B2D18"),
    ("dsq-berlin", "Đại sứ quán Việt Nam tại Đức", "Be7lin-Spree#2291", "6A1D93F0C2E45B07"),
    ("dsq-tokyo", "Đại sứ quán Việt Nam tại Nhật Bản", "Sakura!Hanoi-8812", "2B8E04D7A19C6F35"),
    ("dsq-canberra", "Đại sứ quán Việt Nam tại Australia", "Kangaroo$Lake-4410", "71C3A8E25D0F9B44"),
    ("dsq-ottawa", "Đại sứ quán Việt Nam tại Canada", "Maple-Rideau#5520", "3F5B20E9C7A1D806"),
    ("dsq-seoul", "Đại sứ quán Việt Nam tại Hàn Quốc", "Han-River!7781xx", "4C92E1B07A3D5F60"),
    ("dsq-delhi", "Đại sứ quán Việt Nam tại Ấn Độ", "Yamuna#Lotus-3307", "1D6F8A2C0B9E4735"),
    ("dsq-cairo", "Đại sứ quán Việt Nam tại Ai Cập", "Nile-Giza$9043!", "58A0C3E7F1B2D694"),
    ("dsq-rome", "Đại sứ quán Việt Nam tại Italia", "Tevere#Colosseo-61", "0E7B4D29A6C1F853"),
    ("dsq-madrid", "Đại sứ quán Việt Nam tại Tây Ban Nha", "Prado!Retiro-2718", "63F1A0D8B5C29E47"),
    ("dsq-pretoria", "Đại sứ quán Việt Nam tại Nam Phi", "Jacaranda#Union-55", "2F84C6E1D3A7B590"),
    ("dsq-brasilia", "Đại sứ quán Việt Nam tại Brazil", "Planalto$Ipe-9182", "7A25D9C0E4B1F368"),
    ("dsq-london", "Đại sứ quán Việt Nam tại Vương quốc Anh", "Thames#Kensington-4", "19E3B7F05C8A2D46"),
    ("dsq-washington", "Đại sứ quán Việt Nam tại Hoa Kỳ", "Potomac!Capitol-77", "45D0A8C3F7E91B62"),
]
LOST_CARD = "0C4E9B1A7D3F2856"  # dsq-cairo's old card, reported lost in 2024 (already on the list)

CONSULATE_DOCS = [  # id, classification, date, title
    ("VB-2025-0057", "THƯỜNG", "2025-01-08", "Kế hoạch tổ chức Tết cộng đồng người Việt"),
    ("VB-2025-0118", "THƯỜNG", "2025-01-21", "Hướng dẫn công tác bảo hộ công dân dịp Tết"),
    ("VB-2025-0203", "THƯỜNG", "2025-02-04", "Lịch làm việc đoàn công tác của Bộ"),
    ("VB-2025-0311", "THƯỜNG", "2025-02-19", "Danh sách hồ sơ thị thực chờ duyệt"),
    ("VB-2025-0347", "THƯỜNG", "2025-02-26", "Tổng hợp tình hình lao động Việt Nam trên địa bàn"),
    ("VB-2025-0429", "MẬT", "2025-03-05", "Phương án bảo đảm an ninh cơ quan đại diện (dự thảo)"),
]
SECRET_TITLE = "Báo cáo đánh giá tình hình và đề xuất phương án đàm phán (tài liệu mật)"
OTHER_DOCS = [
    ("VB-2025-0012", "dsq-paris", "THƯỜNG", "2025-01-03", "Chương trình Ngày Văn hoá Việt Nam"),
    ("VB-2025-0044", "dsq-berlin", "THƯỜNG", "2025-01-07", "Thông báo lịch nghỉ Tết Nguyên đán"),
    ("VB-2025-0091", "dsq-tokyo", "MẬT", "2025-01-15", "Báo cáo chuẩn bị chuyến thăm cấp cao"),
    ("VB-2025-0136", "dsq-paris", "MẬT", "2025-01-24", "Ghi nhớ trao đổi song phương"),
    ("VB-2025-0159", "dsq-canberra", "THƯỜNG", "2025-01-29", "Hướng dẫn cấp hộ chiếu mẫu mới"),
    ("VB-2025-0187", "dsq-ottawa", "THƯỜNG", "2025-02-01", "Kế hoạch xúc tiến thương mại quý I"),
    ("VB-2025-0222", "dsq-seoul", "THƯỜNG", "2025-02-07", "Danh sách lao động hết hạn hợp đồng"),
    ("VB-2025-0255", "dsq-delhi", "THƯỜNG", "2025-02-12", "Chương trình hợp tác giáo dục"),
    ("VB-2025-0268", "dsq-paris", "THƯỜNG", "2025-02-14", "Lịch tiếp công dân tháng 3"),
    ("VB-2025-0290", "dsq-cairo", "THƯỜNG", "2025-02-17", "Cập nhật tình hình an ninh khu vực"),
    ("VB-2025-0333", "dsq-rome", "THƯỜNG", "2025-02-24", "Kế hoạch tổ chức hội thảo đầu tư"),
    ("VB-2025-0361", "dsq-madrid", "THƯỜNG", "2025-02-28", "Hướng dẫn hợp pháp hoá lãnh sự"),
    ("VB-2025-0388", "dsq-berlin", "MẬT", "2025-03-03", "Đánh giá quan hệ hợp tác quốc phòng"),
    ("VB-2025-0410", "dsq-pretoria", "THƯỜNG", "2025-03-04", "Thông báo về thủ tục thị thực điện tử"),
    ("VB-2025-0455", "dsq-brasilia", "THƯỜNG", "2025-03-07", "Báo cáo xuất khẩu nông sản"),
    ("VB-2025-0471", "dsq-london", "THƯỜNG", "2025-03-10", "Lịch làm việc tháng 3"),
    ("VB-2025-0488", "dsq-washington", "MẬT", "2025-03-11", "Chuẩn bị đối thoại chiến lược"),
]


def body(doc_id: str, mission: str, cls: str, date: str, title: str) -> bytes:
    return (
        "BỘ NGOẠI GIAO                          CỘNG HOÀ XÃ HỘI CHỦ NGHĨA VIỆT NAM\n"
        f"Số: {doc_id}                     Độc lập - Tự do - Hạnh phúc\n"
        f"Độ mật: {cls}                              Hà Nội, ngày {date}\n\n"
        f"Kính gửi: {mission}\n"
        f"V/v: {title}\n\n"
        "(Nội dung mô phỏng phục vụ diễn tập ứng cứu sự cố. Simulated content for an incident-response drill.)\n"
    ).encode()


def main(consulate: str, leaked: str, secret_doc: str, next_serial: str, paris_ip: str) -> None:
    city = consulate.split("-", 1)[-1].replace("-", " ").title()
    mission = f"Tổng Lãnh sự quán Việt Nam tại {city}"
    data = {}
    for acc, m, pw, _ in EMBASSIES:
        data[acc] = {"mission": m, "password": ps.hash_password(acc, pw), "client_cert_required": True,
                     "locked": False, "disabled": False, "failures": 0}
    data[consulate] = {
        "mission": mission, "password": ps.hash_password(consulate, leaked), "client_cert_required": False,
        "locked": False, "disabled": False, "failures": 0,
        "note": "tạm miễn chứng thư số (đầu đọc thẻ hỏng, phiếu HT-2291): dùng API cũ / temporary exemption, legacy sync client",
    }
    (ps.ETC / "site.json").write_text(json.dumps({"paris_ip": paris_ip, "consulate": consulate,
                                                  "consulate_ip": "203.0.113.140"}) + "\n")
    ps.STORE.mkdir(parents=True, exist_ok=True)
    missions = {acc: m for acc, m, _, _ in EMBASSIES}
    rows = [(i, consulate, c, d, t) for i, c, d, t in CONSULATE_DOCS] + [(secret_doc, consulate, "MẬT", "2025-03-12", SECRET_TITLE)]
    rows += OTHER_DOCS
    rows.sort()
    lines = ["id;recipient;classification;date;title"]
    for n, (i, r, c, d, t) in enumerate(rows, 1):
        lines.append(f"{i};{r};{c};{d};{t}")
        (ps.STORE / f"{n:04d}.enc").write_bytes(ps.encrypt(i, body(i, missions.get(r, mission), c, d, t)))
    ps.REGISTER.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ps.CA_DIR.mkdir(parents=True, exist_ok=True)
    idx = []
    for acc, _, _, serial in EMBASSIES:
        idx.append(f"V\t280101000000Z\t\t{serial}\tunknown\t/C=VN/O=Bo Ngoai giao/OU=the-chung-thu/CN={acc}")
    idx.append(f"R\t270101000000Z\t240611083000Z\t{LOST_CARD}\tunknown\t/C=VN/O=Bo Ngoai giao/OU=the-chung-thu/CN=dsq-cairo")
    (ps.CA_DIR / "index.txt").write_text("\n".join(idx) + "\n")
    (ps.CA_DIR / "serial").write_text(next_serial.upper() + "\n")
    ps.REVOKED.write_text("# the portal's revocation list: one certificate serial (hex) a line; read at every request\n"
                          f"{LOST_CARD}  # dsq-cairo: card reported lost 2024-06-11\n")
    ps.save_accounts(data)  # last: the playbook seeds until this file exists


if __name__ == "__main__":
    main(*sys.argv[1:6])
