-- The portal's database, seeded at image build time (fictional people).
CREATE ROLE portal LOGIN PASSWORD 'portal-db-2024';
CREATE DATABASE portal OWNER portal;
\connect portal
SET ROLE portal;
CREATE TABLE citizens (
    national_id text PRIMARY KEY,
    full_name   text NOT NULL,
    district    text NOT NULL,
    birth_year  integer,
    phone       text
);
INSERT INTO citizens VALUES
    ('079201000101', 'Nguyen Van An',  'District 1',  1985, '0901000101'),
    ('079201000102', 'Tran Thi Bich',  'District 1',  1990, '0901000102'),
    ('079201000103', 'Le Van Cuong',   'District 3',  1978, '0901000103'),
    ('079201000104', 'Pham Thi Dung',  'District 3',  2001, '0901000104'),
    ('079201000105', 'Hoang Van Em',   'District 5',  1969, '0901000105'),
    ('079201000106', 'Vu Thi Phuong',  'District 5',  1995, '0901000106'),
    ('079201000107', 'Dang Van Giang', 'District 7',  1988, '0901000107'),
    ('079201000108', 'Bui Thi Hoa',    'District 7',  1999, '0901000108');
CREATE TABLE staff_accounts (
    username      text PRIMARY KEY,
    password_md5  text NOT NULL,
    role          text NOT NULL
);
INSERT INTO staff_accounts VALUES
    ('admin',   md5('admin123'),  'administrator'),
    ('clerk',   md5('clerk2024'), 'clerk'),
    ('auditor', md5('Audit@2024'), 'auditor');
