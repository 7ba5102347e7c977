"""Create the portal's sqlite database: fictional citizens and staff accounts."""

import sqlite3
import sys

CITIZENS = [
    ("079201000101", "Nguyen Van An", "District 1", 1985, "0901000101"),
    ("079201000102", "Tran Thi Bich", "District 1", 1990, "0901000102"),
    ("079201000103", "Le Van Cuong", "District 3", 1978, "0901000103"),
    ("079201000104", "Pham Thi Dung", "District 3", 2001, "0901000104"),
    ("079201000105", "Hoang Van Em", "District 5", 1969, "0901000105"),
    ("079201000106", "Vu Thi Phuong", "District 5", 1995, "0901000106"),
    ("079201000107", "Dang Van Giang", "District 7", 1988, "0901000107"),
    ("079201000108", "Bui Thi Hoa", "District 7", 1999, "0901000108"),
    ("079201000109", "Do Van Khanh", "Thu Duc", 1975, "0901000109"),
    ("079201000110", "Ngo Thi Lan", "Thu Duc", 2003, "0901000110"),
    ("079201000111", "Duong Van Minh", "District 10", 1982, "0901000111"),
    ("079201000112", "Ly Thi Ngoc", "District 10", 1993, "0901000112"),
]

# Weak on purpose: scenarios brute-force and dump these.
USERS = [
    ("admin", "admin123", "administrator"),
    ("clerk", "clerk2024", "clerk"),
    ("auditor", "Audit@2024", "auditor"),
]


def main(path: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        """
        DROP TABLE IF EXISTS citizens;
        DROP TABLE IF EXISTS users;
        CREATE TABLE citizens (
            national_id TEXT PRIMARY KEY, full_name TEXT, district TEXT, birth_year INTEGER, phone TEXT);
        CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT, role TEXT);
        """
    )
    db.executemany("INSERT INTO citizens VALUES (?, ?, ?, ?, ?)", CITIZENS)
    db.executemany("INSERT INTO users VALUES (?, ?, ?)", USERS)
    db.commit()
    db.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/var/lib/web/portal.db")
