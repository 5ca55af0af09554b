-- Type-coverage workload for rowhook's decoder (MariaDB 10.11).
--
--   port=$(tests/mariadb.sh start "$dir")
--   mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot < tests/sql/types.sql
--
-- Writes edge values of every column type of DESIGN.md's type table into the row-based
-- binlog: INSERT, UPDATE and DELETE, DDL mid-stream, multi-table, MyISAM, XA, rolled-back
-- and 100,000-row transactions. Deterministic: the session clock is pinned (SET timestamp),
-- so event header timestamps (`ts`) are fixed as well; no NOW()/RAND()/AUTO_INCREMENT.
-- Markers: no value containing ROLLED_BACK is in the binlog, except
-- XA_ROLLED_BACK_AFTER_PREPARE (logged at its XA PREPARE, which DESIGN.md says is delivered).
-- Ends with FLUSH BINARY LOGS, so the workload's binlog file is closed.

SET NAMES utf8mb4;
SET SESSION sql_mode = '';              -- zero dates, invalid ENUM values (index 0)
SET SESSION time_zone = '+00:00';
SET SESSION timestamp = 1700000000;     -- 2023-11-14 22:13:20 UTC

DROP DATABASE IF EXISTS rh_types;
CREATE DATABASE rh_types CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
USE rh_types;

-- ===========================================================================================
-- Integers, YEAR, BIT
-- ===========================================================================================
CREATE TABLE ints (
  id  INT PRIMARY KEY,
  ti  TINYINT,   tu TINYINT UNSIGNED,
  si  SMALLINT,  su SMALLINT UNSIGNED,
  mi  MEDIUMINT, mu MEDIUMINT UNSIGNED,
  i   INT,       iu INT UNSIGNED,
  bi  BIGINT,    bu BIGINT UNSIGNED,
  y   YEAR,
  b1  BIT(1), b5 BIT(5), b64 BIT(64)
) ENGINE=InnoDB;

INSERT INTO ints VALUES
  -- minimum
  (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 1901, 0, 0, 0),
  -- maximum
  (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
      9223372036854775807, 18446744073709551615, 2155, 1, 31, 0xFFFFFFFFFFFFFFFF),
  -- zero (YEAR 0 is 0000)
  (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
  -- -1 (unsigned columns: 1)
  (4, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, 2000, 1, 21, 0x8000000000000001),
  -- high bit set: negative just past the lower type's range, unsigned at 2^(n-1)
  (5, -100, 128, -256, 32768, -65536, 8388608, -16777216, 2147483648,
      -4294967296, 9223372036854775808, 1970, 0, 16, 0x0100000000000000);
-- more negative MEDIUMINTs (3-byte sign extension)
INSERT INTO ints (id, mi) VALUES (6, -1), (7, -256), (8, -65537), (9, -8388607), (10, -2);
INSERT INTO ints (id) VALUES (11);      -- NULL everywhere else

UPDATE ints SET mi = -3, bu = bu - 1, y = 1999 WHERE id = 2;
UPDATE ints SET ti = NULL, b64 = 0xFFFFFFFFFFFFFFFF WHERE id = 3;
DELETE FROM ints WHERE id = 4;

-- ===========================================================================================
-- DECIMAL
-- ===========================================================================================
CREATE TABLE decs (
  id   INT PRIMARY KEY,
  d65  DECIMAL(65,30),
  d10  DECIMAL(10,2),
  d5   DECIMAL(5,0),
  d4   DECIMAL(4,4),
  d18  DECIMAL(18,9),
  d20  DECIMAL(20,0),
  du   DECIMAL(10,2) UNSIGNED
) ENGINE=InnoDB;

INSERT INTO decs VALUES
  (1, 99999999999999999999999999999999999.999999999999999999999999999999,
      99999999.99, 99999, 0.9999, 999999999.999999999, 99999999999999999999, 99999999.99),
  (2, -99999999999999999999999999999999999.999999999999999999999999999999,
      -99999999.99, -99999, -0.9999, -999999999.999999999, -99999999999999999999, 0),
  (3, 0, 0, 0, 0, 0, 0, 0),
  (4, -10.55, -10.55, -1, -0.0001, -0.5, -1, 1.50),
  (5, 0.000000000000000000000000000001, 0.01, 1, 0.0001, 123456789.123456789,
      1000000000, 0.01),
  (6, 1.5, 1.50, 10, 0.5, -0.000000001, 999999999, 12345678.9),
  (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE decs SET d10 = 0.10, d65 = -0.5 WHERE id = 4;
DELETE FROM decs WHERE id = 6;

-- ===========================================================================================
-- FLOAT, DOUBLE
-- ===========================================================================================
CREATE TABLE floats (id INT PRIMARY KEY, f FLOAT, d DOUBLE) ENGINE=InnoDB;

INSERT INTO floats VALUES
  (1, 0, 0),
  (2, 1.1, 1.1),
  (3, -1.1, -1.1),
  (4, 3.4028234e38, 1.7976931348623157e308),        -- largest finite
  (5, -3.4028234e38, -1.7976931348623157e308),
  (6, 1.17549435e-38, 2.2250738585072014e-308),     -- smallest normal
  (7, 1.4e-45, 5e-324),                             -- smallest subnormal
  (8, 0.1, 0.1),
  (9, 123456.789, 1e100),
  (10, 1e-10, 1e21),
  (11, 16777217, 9007199254740993),                 -- not representable: rounds
  (12, NULL, NULL);

UPDATE floats SET f = -0.5, d = -2.5e-300 WHERE id = 8;
DELETE FROM floats WHERE id = 9;

-- ===========================================================================================
-- DATE, DATETIME(0..6)
-- ===========================================================================================
CREATE TABLE dates (
  id INT PRIMARY KEY, d DATE,
  dt0 DATETIME, dt1 DATETIME(1), dt2 DATETIME(2), dt3 DATETIME(3),
  dt4 DATETIME(4), dt5 DATETIME(5), dt6 DATETIME(6)
) ENGINE=InnoDB;

INSERT INTO dates VALUES
  (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00.0', '0000-00-00 00:00:00.00',
      '0000-00-00 00:00:00.000', '0000-00-00 00:00:00.0000', '0000-00-00 00:00:00.00000',
      '0000-00-00 00:00:00.000000'),
  (2, '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.0', '1000-01-01 00:00:00.00',
      '1000-01-01 00:00:00.000', '1000-01-01 00:00:00.0000', '1000-01-01 00:00:00.00000',
      '1000-01-01 00:00:00.000000'),
  (3, '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.9', '9999-12-31 23:59:59.99',
      '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.9999', '9999-12-31 23:59:59.99999',
      '9999-12-31 23:59:59.999999'),
  (4, '2024-02-29', '2024-02-29 12:34:56', '2024-02-29 12:34:56.1', '2024-02-29 12:34:56.12',
      '2024-02-29 12:34:56.123', '2024-02-29 12:34:56.1234', '2024-02-29 12:34:56.12345',
      '2024-02-29 12:34:56.123456'),
  -- leading zeros in the fraction
  (5, '1969-12-31', '1969-12-31 23:59:59', '1969-12-31 23:59:59.0', '1969-12-31 23:59:59.01',
      '1969-12-31 23:59:59.001', '1969-12-31 23:59:59.0001', '1969-12-31 23:59:59.00001',
      '1969-12-31 23:59:59.000001'),
  -- zero month/day parts (allowed with sql_mode='')
  (6, '2024-00-00', '2024-01-00 00:00:00', '2024-00-15 01:02:03.4', NULL, NULL, NULL, NULL, NULL),
  (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE dates SET d = '2000-01-01', dt6 = '2000-01-01 00:00:00.5' WHERE id = 4;
DELETE FROM dates WHERE id = 2;

-- ===========================================================================================
-- TIMESTAMP(0), TIMESTAMP(3), TIMESTAMP(6): stored as UTC seconds
-- ===========================================================================================
CREATE TABLE stamps (
  id  INT PRIMARY KEY,
  ts0 TIMESTAMP    NULL DEFAULT NULL,
  ts3 TIMESTAMP(3) NULL DEFAULT NULL,
  ts6 TIMESTAMP(6) NULL DEFAULT NULL
) ENGINE=InnoDB;

INSERT INTO stamps VALUES
  (1, '1970-01-01 00:00:01', '1970-01-01 00:00:01.000', '1970-01-01 00:00:01.000000'),
  (2, '2038-01-19 03:14:07', '2038-01-19 03:14:07.999', '2038-01-19 03:14:07.999999'),
  (3, '0000-00-00 00:00:00', '0000-00-00 00:00:00.000', '0000-00-00 00:00:00.000000'),
  (4, '2024-02-29 12:34:56', '2024-02-29 12:34:56.123', '2024-02-29 12:34:56.000001'),
  (5, NULL, NULL, NULL);
-- Written in +05:30: the binlog (and the JSON) hold 2024-01-01T00:00:00Z
SET SESSION time_zone = '+05:30';
INSERT INTO stamps VALUES
  (6, '2024-01-01 05:30:00', '2024-01-01 05:30:00.500', '2024-01-01 05:30:00.000500');
SET SESSION time_zone = '+00:00';

UPDATE stamps SET ts6 = '2000-01-01 00:00:00.5', ts0 = NULL WHERE id = 4;
DELETE FROM stamps WHERE id = 1;

-- ===========================================================================================
-- TIME(0..6), including negative values with fractions
-- ===========================================================================================
CREATE TABLE times (
  id INT PRIMARY KEY, t0 TIME, t1 TIME(1), t2 TIME(2), t3 TIME(3), t4 TIME(4), t5 TIME(5),
  t6 TIME(6)
) ENGINE=InnoDB;

INSERT INTO times VALUES
  (1, '-838:59:59', '-838:59:59.0', '-838:59:59.00', '-838:59:59.000', '-838:59:59.0000',
      '-838:59:59.00000', '-838:59:59.000000'),
  (2, '838:59:59', '838:59:59.9', '838:59:59.99', '838:59:59.999', '838:59:59.9999',
      '838:59:59.99999', '838:59:59.999999'),
  (3, '00:00:00', '00:00:00.0', '00:00:00.00', '00:00:00.000', '00:00:00.0000',
      '00:00:00.00000', '00:00:00.000000'),
  (4, '-00:00:01', '-00:00:01.0', '-00:00:01.00', '-00:00:01.000', '-00:00:01.0000',
      '-00:00:01.00000', '-00:00:01.000000'),
  -- negative, below one second
  (5, '-00:00:01', '-00:00:00.5', '-00:00:00.12', '-00:00:00.123', '-00:00:00.1234',
      '-00:00:00.12345', '-00:00:00.123456'),
  -- negative, large, with a fraction (mysql_common got '-838:59:58.12' wrong)
  (6, '-838:59:58', '-838:59:58.1', '-838:59:58.12', '-838:59:58.123', '-838:59:58.1234',
      '-838:59:58.12345', '-838:59:58.123456'),
  -- negative, smallest fraction
  (7, '-01:00:00', '-00:00:01.5', '-00:00:01.01', '-00:00:01.001', '-00:00:01.0001',
      '-00:00:01.00001', '-00:00:00.000001'),
  (8, '100:00:00', '100:00:00.0', '-100:00:00.01', '100:00:00.000', '-100:00:00.0001',
      '100:00:00.00000', '-100:00:00.000001'),
  (9, '12:34:56', '12:34:56.1', '12:34:56.12', '12:34:56.123', '12:34:56.1234',
      '12:34:56.12345', '12:34:56.123456'),
  (10, '-12:34:56', '-12:34:56.7', '-12:34:56.78', '-12:34:56.789', '-12:34:56.7891',
      '-12:34:56.78912', '-12:34:56.789123'),
  (11, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE times SET t2 = '-00:00:00.01', t6 = '23:59:59.999999' WHERE id = 9;
DELETE FROM times WHERE id = 3;

-- ===========================================================================================
-- Strings: utf8mb4 (CHAR, VARCHAR, the TEXTs, CHAR(100) = 400 bytes, VARCHAR(300))
-- ===========================================================================================
CREATE TABLE strs (
  id   INT PRIMARY KEY,
  c    CHAR(10),
  v    VARCHAR(50),                  -- 200 bytes: 1-byte length
  tt   TINYTEXT,
  t    TEXT,
  mt   MEDIUMTEXT,
  lt   LONGTEXT,
  c100 CHAR(100),                    -- 400 bytes: > 255, length in the type metadata
  v300 VARCHAR(300),                 -- 2-byte length
  vbin VARCHAR(20) COLLATE utf8mb4_bin
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO strs VALUES
  (1, '😀漢字', '😀🎉 漢字かな한글', 'Ünïcödé', 'emoji 👍🏽 family 👨‍👩‍👧', '中文',
      'русский', REPEAT('😀', 100), REPEAT('é', 300), 'Zß'),
  (2, 'it''s', 'say "hi"', 'back\\slash', '{"json":"like"}', 'tab\there',
      'single '' double " back \\ slash', 'x', '\\', '/'),
  -- control characters, C1 controls, U+2028, BOM, U+FFFD, a NUL
  (3, 'a\0b', CONCAT('\0\t\n\r', _utf8mb4 X'011B1F7F'), _utf8mb4 X'C280C29F',
      _utf8mb4 X'E280A8EFBBBFEFBFBD', CONCAT('nul[', '\0', ']'), '\Z', 'ctl\b\n',
      'line1\nline2', _utf8mb4 X'00'),
  (4, '', '', '', '', '', '', '', '', ''),
  -- trailing (and leading) spaces: CHAR's trailing spaces are not in the binlog
  (5, 'ab   ', 'ab   ', '  lead', 'trail  ', ' ', '  ', '   ', '   ', 'x '),
  -- long values: TINYTEXT max, TEXT max, > 64 KiB in MEDIUMTEXT and LONGTEXT
  (6, REPEAT('c', 10), REPEAT('v', 50), REPEAT('z', 255), REPEAT('y', 65535),
      REPEAT('abcdefghij', 7000), REPEAT('ü', 40000), REPEAT('漢', 100),
      REPEAT('x', 300), REPEAT('é', 20)),
  (7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE strs SET v = 'updated ✓', lt = NULL WHERE id = 1;
UPDATE strs SET mt = 'short now' WHERE id = 6;
DELETE FROM strs WHERE id = 2;

-- ===========================================================================================
-- Strings: latin1 (cp1252 in MySQL/MariaDB)
-- ===========================================================================================
CREATE TABLE strs_latin1 (
  id INT PRIMARY KEY,
  c  CHAR(10),
  v  VARCHAR(300),                   -- 300 bytes: 2-byte length
  t  TEXT
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

INSERT INTO strs_latin1 VALUES
  (1, 'é', 'café €', 'Ünïcödé ½ ÿ'),
  -- raw bytes 0x80..0x9F (0x81 0x8D 0x8F 0x90 0x9D are unassigned in cp1252)
  (2, _latin1 X'80818D8F90',
      _latin1 X'808182838485868788898A8B8C8D8E8F909192939495969798999A9B9C9D9E9F',
      _latin1 X'A0A1BFC0FF'),
  (3, 'ab   ', REPEAT('é', 300), REPEAT('€', 1000)),
  (4, '', '', ''),
  (5, NULL, NULL, NULL);

UPDATE strs_latin1 SET v = 'naïve' WHERE id = 1;
DELETE FROM strs_latin1 WHERE id = 4;

-- ===========================================================================================
-- Strings: utf8mb3, ascii, cp1251, utf16
-- ===========================================================================================
CREATE TABLE strs_cs (
  id    INT PRIMARY KEY,
  u3    VARCHAR(20) CHARACTER SET utf8mb3,
  a     VARCHAR(20) CHARACTER SET ascii,
  cy    VARCHAR(20) CHARACTER SET cp1251,
  u16   VARCHAR(20) CHARACTER SET utf16,
  c_u3  CHAR(5)     CHARACTER SET utf8mb3,
  c_cy  CHAR(5)     CHARACTER SET cp1251,
  c_u16 CHAR(3)     CHARACTER SET utf16
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO strs_cs VALUES
  (1, 'é漢€', 'hello ~', 'Привет, мир', 'é😀€', 'ab  ', 'Ж ', 'a '),
  (2, '', '', '', '', '', '', ''),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE strs_cs SET cy = 'Ёё', u16 = '𝄞' WHERE id = 1;
DELETE FROM strs_cs WHERE id = 2;

-- ===========================================================================================
-- Binary: BINARY (trailing 0x00), VARBINARY, BLOBs
-- ===========================================================================================
CREATE TABLE bins (
  id  INT PRIMARY KEY,
  b4  BINARY(4),
  b16 BINARY(16),
  vb  VARBINARY(300),
  tb  TINYBLOB,
  bl  BLOB,
  mb  MEDIUMBLOB,
  lb  LONGBLOB
) ENGINE=InnoDB;

INSERT INTO bins VALUES
  (1, X'61000000', X'00112233445566778899AABBCCDDEEFF', X'00FF00', X'DEADBEEF', X'00',
      REPEAT(X'00FF', 35000), X'89504E470D0A1A0A'),
  (2, X'00000000', X'00000000000000000000000000000000', '', '', '', '', ''),
  (3, 'ab', 'short', X'00000000', X'0000', 'text in a blob', X'FF', X'00'),
  (4, X'FFFFFFFF', X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF', REPEAT(X'AB', 300), REPEAT(X'CD', 255),
      REPEAT(X'EF', 65535), X'', REPEAT(X'01', 70000)),
  (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL);

UPDATE bins SET b4 = X'00000061', vb = NULL WHERE id = 1;
UPDATE bins SET b4 = X'01000000' WHERE id = 2;
DELETE FROM bins WHERE id = 4;

-- ===========================================================================================
-- ENUM, SET
-- ===========================================================================================
CREATE TABLE enums (
  id  INT PRIMARY KEY,
  e   ENUM('a','b','c'),
  eu  ENUM('naïve','it''s','😀','with,comma'),
  s3  SET('x','y','z'),                                 -- 1 byte
  s10 SET('a','b','c','d','e','f','g','h','i','j')      -- 2 bytes
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO enums VALUES
  (1, 'a', 'naïve', '', 'a,j'),
  (2, 'c', 'it''s', 'x,z', 'i'),
  (3, 'b', '😀', 'x,y,z', 'a,b,c,d,e,f,g,h,i,j'),
  (4, 'zzz', 'with,comma', 'z,x', 'h,i'),      -- 'zzz' is invalid: stored as '' (index 0)
  (5, NULL, NULL, NULL, NULL);

UPDATE enums SET e = 'b', s3 = 'y' WHERE id = 1;
DELETE FROM enums WHERE id = 2;

-- ENUM with 300 labels (2 bytes), SETs with 20 (3 bytes) and 64 members (8 bytes)
SELECT GROUP_CONCAT(CONCAT('''e', seq, '''') ORDER BY seq) INTO @e300 FROM seq_1_to_300;
SELECT GROUP_CONCAT(CONCAT('''m', seq, '''') ORDER BY seq) INTO @m20 FROM seq_1_to_20;
SELECT GROUP_CONCAT(CONCAT('''m', seq, '''') ORDER BY seq) INTO @m64 FROM seq_1_to_64;
SET @ddl = CONCAT('CREATE TABLE enums_big (id INT PRIMARY KEY, e300 ENUM(', @e300,
                  '), s20 SET(', @m20, '), s64 SET(', @m64, ')) ENGINE=InnoDB');
PREPARE stmt FROM @ddl;
EXECUTE stmt;
DEALLOCATE PREPARE stmt;

INSERT INTO enums_big VALUES
  (1, 'e1', 'm1', 'm1,m64'),
  (2, 'e256', 'm9,m17,m20', 'm33'),
  (3, 'e300', '', ''),
  (4, 'nope', 'm20', 'm32');                    -- invalid ENUM value: index 0
SELECT GROUP_CONCAT(CONCAT('m', seq) ORDER BY seq) INTO @all64 FROM seq_1_to_64;
SELECT GROUP_CONCAT(CONCAT('m', seq) ORDER BY seq) INTO @all20 FROM seq_1_to_20;
INSERT INTO enums_big VALUES (5, 'e255', @all20, @all64), (6, NULL, NULL, NULL);

UPDATE enums_big SET e300 = 'e257', s64 = 'm2,m63' WHERE id = 1;
DELETE FROM enums_big WHERE id = 3;

-- ===========================================================================================
-- JSON (MariaDB: LONGTEXT utf8mb4_bin with CHECK (json_valid(...)))
-- ===========================================================================================
CREATE TABLE jsons (id INT PRIMARY KEY, j JSON) ENGINE=InnoDB;

INSERT INTO jsons VALUES
  (1, '{"a": [1, 2.5, -3e2, {"b": null, "c": [true, false]}], "s": "é😀\\n\\"q\\"", "n": {"deep": {"er": [[[]]]}}}'),
  (2, '[]'),
  (3, 'null'),                                   -- JSON null, not SQL NULL
  (4, '"just a string"'),
  (5, '123.4500'),
  (6, NULL);

UPDATE jsons SET j = JSON_SET(j, '$.added', 42) WHERE id = 1;
DELETE FROM jsons WHERE id = 2;

-- ===========================================================================================
-- Spatial: GEOMETRY, POINT, POLYGON (a latin1 column after them: charset metadata order)
-- ===========================================================================================
CREATE TABLE geo (
  id    INT PRIMARY KEY,
  g     GEOMETRY,
  p     POINT,
  pg    POLYGON,
  after VARCHAR(20) CHARACTER SET latin1
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO geo VALUES
  (1, ST_GeomFromText('LINESTRING(0 0, 1 1, 2 2)'), ST_GeomFromText('POINT(1.5 -2.25)'),
      ST_GeomFromText('POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))'), 'café'),
  (2, ST_GeomFromText('MULTIPOINT(1 1, 2 2)', 4326), ST_GeomFromText('POINT(10 20)', 4326),
      ST_GeomFromText('POLYGON((0 0, 10 0, 10 10, 0 10, 0 0), (2 2, 3 2, 3 3, 2 2))', 4326),
      'é€'),
  (3, ST_GeomFromText('GEOMETRYCOLLECTION(POINT(0 0), LINESTRING(0 0, 1 1))'),
      ST_GeomFromText('POINT(0 0)'), NULL, ''),
  (4, NULL, NULL, NULL, NULL);

UPDATE geo SET p = ST_GeomFromText('POINT(-1 -1)', 3857), after = 'moved' WHERE id = 1;
DELETE FROM geo WHERE id = 3;

-- ===========================================================================================
-- INET4, INET6, UUID
-- ===========================================================================================
CREATE TABLE net (
  id    INT PRIMARY KEY,
  i4    INET4,
  i6    INET6,
  u     UUID,
  after VARCHAR(20) CHARACTER SET latin1
) ENGINE=InnoDB;

INSERT INTO net VALUES
  (1, '127.0.0.1', '::1', '123e4567-e89b-12d3-a456-426614174000', 'é'),
  (2, '0.0.0.0', '::', '00000000-0000-0000-0000-000000000000', ''),
  (3, '255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      'ffffffff-ffff-ffff-ffff-ffffffffffff', 'max'),
  (4, '10.1.2.3', '2001:db8::1', '01234567-89ab-4cde-8f01-23456789abcd', 'v4 uuid'),
  (5, '192.168.0.1', '::ffff:1.2.3.4', '6ccd780c-baba-1026-9564-5b8c656024db', 'v1 uuid'),
  (6, NULL, NULL, NULL, NULL);

UPDATE net SET i4 = '1.2.3.4', i6 = 'fe80::1' WHERE id = 1;
DELETE FROM net WHERE id = 2;

-- ===========================================================================================
-- MariaDB COMPRESSED columns (binlog types 140/141). column_compression_threshold is 100:
-- shorter values are stored plain, longer ones zlib-compressed unless that does not help.
-- ===========================================================================================
CREATE TABLE comp (
  id    INT PRIMARY KEY,
  vc    VARCHAR(1000) COMPRESSED CHARACTER SET utf8mb4,
  tc    TEXT COMPRESSED CHARACTER SET utf8mb4,
  bc    BLOB COMPRESSED,
  l1c   TEXT COMPRESSED CHARACTER SET latin1,
  after VARCHAR(20) CHARACTER SET latin1
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO comp VALUES
  -- short: stored plain
  (1, 'abc', 'short é😀', X'000102', 'café', 'é'),
  -- long and repetitive: stored compressed
  (2, REPEAT('hello world ', 50), REPEAT('日本語テキスト ', 100), REPEAT(X'00FF00FF', 500),
      REPEAT('é€ ', 300), 'after'),
  -- long but incompressible (SHA-512 bytes): stored plain
  (3, REPEAT('x', 99), REPEAT('y', 100),
      CONCAT(UNHEX(SHA2('a', 512)), UNHEX(SHA2('b', 512)), UNHEX(SHA2('c', 512)),
             UNHEX(SHA2('d', 512))), REPEAT('z', 101), ''),
  (4, '', '', '', '', ''),
  (5, NULL, NULL, NULL, NULL, NULL);

UPDATE comp SET vc = 'now short', tc = REPEAT('long again ', 40) WHERE id = 1;
UPDATE comp SET bc = NULL WHERE id = 2;
DELETE FROM comp WHERE id = 3;

-- ===========================================================================================
-- Generated, invisible and system-versioned columns
-- ===========================================================================================
CREATE TABLE gen (
  id INT PRIMARY KEY,
  a  INT,
  v  INT AS (a * 2) VIRTUAL,
  s  INT AS (a + 1) STORED,
  h  INT INVISIBLE DEFAULT 7
) ENGINE=InnoDB;
INSERT INTO gen (id, a) VALUES (1, 10), (2, NULL);
UPDATE gen SET a = 11, h = 8 WHERE id = 1;
DELETE FROM gen WHERE id = 2;

-- row_start/row_end are invisible TIMESTAMP(6) columns; row_end of a current row is
-- 2038-01-19 03:14:07.999999. The clock is pinned, so they are deterministic.
CREATE TABLE versioned (id INT PRIMARY KEY, x INT) ENGINE=InnoDB WITH SYSTEM VERSIONING;
INSERT INTO versioned VALUES (1, 100), (2, 200);
SET SESSION timestamp = 1700000100;
UPDATE versioned SET x = 101 WHERE id = 1;      -- an UPDATE + an INSERT of the history row
DELETE FROM versioned WHERE id = 2;             -- an UPDATE of row_end
SET SESSION timestamp = 1700000000;

-- ===========================================================================================
-- Keys and names: no primary key, composite key, names that need quoting
-- ===========================================================================================
CREATE TABLE nopk (a INT, b VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO nopk VALUES (1, 'dup'), (1, 'dup'), (2, 'x'), (NULL, NULL);
UPDATE nopk SET b = 'upd' WHERE a = 1;          -- two identical rows change
DELETE FROM nopk WHERE a = 2;

-- primary key (a, b) in a different order than the columns
CREATE TABLE cpk (b VARCHAR(10), a INT, c INT, PRIMARY KEY (a, b)) ENGINE=InnoDB;
INSERT INTO cpk VALUES ('k1', 1, 10), ('k2', 1, 20), ('k1', 2, 30);
UPDATE cpk SET c = 21 WHERE a = 1 AND b = 'k2';
UPDATE cpk SET a = 3 WHERE a = 2 AND b = 'k1';   -- primary key changes
DELETE FROM cpk WHERE a = 1 AND b = 'k1';

CREATE TABLE `select` (
  `id`         INT PRIMARY KEY,
  `select`     INT,
  `naïve`      VARCHAR(10),
  `with space` INT,
  `a``b"c`     INT,
  `from`       TEXT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO `select` VALUES (1, 1, 'naïve', 2, 3, 'from'), (2, NULL, NULL, NULL, NULL, NULL);
UPDATE `select` SET `select` = 10, `naïve` = 'ïï' WHERE `id` = 1;
DELETE FROM `select` WHERE `id` = 2;

CREATE TABLE `tëst-table` (`ключ` INT PRIMARY KEY, `値` VARCHAR(10)) ENGINE=InnoDB
  DEFAULT CHARSET=utf8mb4;
INSERT INTO `tëst-table` VALUES (1, '一'), (2, '二');
UPDATE `tëst-table` SET `値` = '三' WHERE `ключ` = 2;

-- ===========================================================================================
-- DDL mid-stream: column names and types change between rows events
-- ===========================================================================================
CREATE TABLE evolve (id INT PRIMARY KEY, a INT, b VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO evolve VALUES (1, 10, 'one');
UPDATE evolve SET a = 11 WHERE id = 1;

ALTER TABLE evolve ADD COLUMN c DECIMAL(6,2) DEFAULT 1.25;
INSERT INTO evolve VALUES (2, 20, 'two', 2.50);
UPDATE evolve SET c = 3.75 WHERE id = 1;

ALTER TABLE evolve DROP COLUMN a;
INSERT INTO evolve VALUES (3, 'three', 3.00);
UPDATE evolve SET b = 'ONE' WHERE id = 1;

ALTER TABLE evolve RENAME COLUMN b TO name;
INSERT INTO evolve VALUES (4, 'four', 4.00);
UPDATE evolve SET name = 'TWO' WHERE id = 2;

ALTER TABLE evolve ADD COLUMN first_col INT FIRST, MODIFY c VARCHAR(10);
INSERT INTO evolve VALUES (50, 5, 'five', '5.5');
UPDATE evolve SET first_col = 1 WHERE id = 1;

RENAME TABLE evolve TO evolved;
INSERT INTO evolved VALUES (60, 6, 'six', '6');
DELETE FROM evolved WHERE id = 3;

-- CREATE TABLE ... SELECT: one GTID (flagged DDL) with a CREATE TABLE QUERY, rows and an XID
CREATE TABLE ctas ENGINE=InnoDB SELECT id, name FROM evolved WHERE id <= 2;
-- TRUNCATE: a statement, no row events
TRUNCATE TABLE ctas;

-- ===========================================================================================
-- A multi-table transaction
-- ===========================================================================================
CREATE TABLE orders (
  id INT PRIMARY KEY, customer VARCHAR(20), amount DECIMAL(10,2),
  status ENUM('new','paid','shipped')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE order_items (
  order_id INT, line INT, sku VARCHAR(10), qty SMALLINT, PRIMARY KEY (order_id, line)
) ENGINE=InnoDB;
CREATE TABLE stock (sku VARCHAR(10) PRIMARY KEY, qty INT) ENGINE=InnoDB;
INSERT INTO stock VALUES ('A', 100), ('B', 50);

BEGIN;
INSERT INTO orders VALUES (7, 'zoë', 12.50, 'new');
INSERT INTO order_items VALUES (7, 1, 'A', 2), (7, 2, 'B', 1);
UPDATE stock SET qty = qty - 2 WHERE sku = 'A';
UPDATE stock SET qty = qty - 1 WHERE sku = 'B';
UPDATE orders SET status = 'paid' WHERE id = 7;
DELETE FROM order_items WHERE order_id = 7 AND line = 2;
COMMIT;

-- ===========================================================================================
-- Rolled-back InnoDB transactions: none of their rows are in the binlog
-- ===========================================================================================
CREATE TABLE rb (id INT PRIMARY KEY, marker VARCHAR(40)) ENGINE=InnoDB;
INSERT INTO rb VALUES (1, 'COMMITTED_BEFORE');

BEGIN;
INSERT INTO rb VALUES (2, 'ROLLED_BACK_MARKER');
UPDATE rb SET marker = 'ROLLED_BACK_UPDATE' WHERE id = 1;
ROLLBACK;

-- a savepoint: the row after it is rolled back, the one before it commits; the binlog
-- keeps a `SAVEPOINT sp` QUERY event inside the transaction
BEGIN;
INSERT INTO rb VALUES (3, 'COMMITTED_BEFORE_SAVEPOINT');
SAVEPOINT sp;
INSERT INTO rb VALUES (4, 'ROLLED_BACK_TO_SAVEPOINT');
ROLLBACK TO SAVEPOINT sp;
COMMIT;

INSERT INTO rb VALUES (5, 'COMMITTED_AFTER');

-- ===========================================================================================
-- MyISAM: no transactions, each statement ends with a COMMIT query event
-- ===========================================================================================
CREATE TABLE my (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=MyISAM DEFAULT CHARSET=utf8mb4;
INSERT INTO my VALUES (1, 'myisam one'), (2, 'myisam two'), (3, 'myisam three');
UPDATE my SET v = 'myisam TWO' WHERE id = 2;
DELETE FROM my WHERE id = 3;

-- InnoDB + MyISAM in one transaction, rolled back: the MyISAM row cannot be undone
-- (warning 1196). The server logs the MyISAM row at once as its own GTID ... COMMIT group;
-- the InnoDB row never reaches the binlog.
BEGIN;
INSERT INTO rb VALUES (6, 'MIXED_INNODB_ROLLED_BACK');
INSERT INTO my VALUES (4, 'MIXED_MYISAM_KEPT');
ROLLBACK;

-- ===========================================================================================
-- XA transactions: the rows are logged at XA PREPARE
-- ===========================================================================================
CREATE TABLE xa (id INT PRIMARY KEY, marker VARCHAR(40)) ENGINE=InnoDB;

XA START 'x1';
INSERT INTO xa VALUES (1, 'XA_COMMITTED');
XA END 'x1';
XA PREPARE 'x1';
XA COMMIT 'x1';

-- rolled back after PREPARE: its rows are already in the binlog (at the PREPARE)
XA START 'x2';
INSERT INTO xa VALUES (2, 'XA_ROLLED_BACK_AFTER_PREPARE');
XA END 'x2';
XA PREPARE 'x2';
XA ROLLBACK 'x2';

-- rolled back before PREPARE: nothing in the binlog
XA START 'x3';
INSERT INTO xa VALUES (3, 'XA_ROLLED_BACK_BEFORE_PREPARE');
XA END 'x3';
XA ROLLBACK 'x3';

-- one phase: an ordinary transaction
XA START 'x4';
INSERT INTO xa VALUES (4, 'XA_ONE_PHASE');
XA END 'x4';
XA COMMIT 'x4' ONE PHASE;

-- an xid with gtrid, bqual and formatID
XA START 'gtrid', 'bqual', 7;
INSERT INTO xa VALUES (5, 'XA_COMMITTED_FORMAT_7');
UPDATE xa SET marker = 'XA_COMMITTED_UPDATED' WHERE id = 1;
XA END 'gtrid', 'bqual', 7;
XA PREPARE 'gtrid', 'bqual', 7;
XA COMMIT 'gtrid', 'bqual', 7;

-- ===========================================================================================
-- Signedness metadata next to YEAR and BIT
-- ===========================================================================================
-- TABLE_MAP gives one signedness bit per numeric column, in column order. MariaDB counts YEAR
-- among them (MySQL does not) and BIT in neither; miscounting one shifts the signedness of every
-- numeric column after it. Unsigned columns hold their maximum (all bits set: -1 if read as
-- signed), signed ones a negative value (a large number if read as unsigned), so any shift shows.
CREATE TABLE signedness (
  id INT PRIMARY KEY, y YEAR, a INT UNSIGNED, bt BIT(4), b TINYINT, d MEDIUMINT UNSIGNED,
  e DECIMAL(5,2) UNSIGNED, f FLOAT, m MEDIUMINT, g BIGINT UNSIGNED, s SMALLINT UNSIGNED
) ENGINE=InnoDB;
INSERT INTO signedness VALUES
  (1, 2024, 4294967295, b'1010', -1, 16777215, 999.99, -1.5, -8388608, 18446744073709551615, 65535),
  (2, 0, 0, b'0', 127, 0, 0, 0, 8388607, 0, 0),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE signedness SET b = -128, y = 1901 WHERE id = 1;

-- Every numeric type, signed and unsigned, before and after YEAR and BIT, in both orders,
-- over more than one byte of signedness bits.
CREATE TABLE signedness_mix (
  id   INT PRIMARY KEY,
  y1   YEAR,              tu  TINYINT UNSIGNED,   bt1 BIT(4),    ts  TINYINT,
  su   SMALLINT UNSIGNED, y2  YEAR,               ss  SMALLINT,
  mu   MEDIUMINT UNSIGNED, bt2 BIT(12),           ms  MEDIUMINT,
  iu   INT UNSIGNED,      du  DECIMAL(5,2) UNSIGNED, i  INT,
  bu   BIGINT UNSIGNED,   fl  FLOAT,              bi  BIGINT,
  dbl  DOUBLE,            y3  YEAR,               dec_s DECIMAL(5,2),
  bt3  BIT(64),           tu2 TINYINT UNSIGNED,   y4  YEAR,      ts2 TINYINT,
  dbu  DOUBLE UNSIGNED,   bt4 BIT(1),             fu  FLOAT UNSIGNED, si2 SMALLINT
) ENGINE=InnoDB;
INSERT INTO signedness_mix VALUES
  (1, 2000, 255, b'1111', -1, 65535, 2155, -1, 16777215, b'111111111111', -1,
      4294967295, 999.99, -1, 18446744073709551615, -2.5, -1, -0.25, 1999, -999.99,
      0xFFFFFFFFFFFFFFFF, 255, 1901, -128, 1.5, b'1', 0.5, -32768),
  (2, 0, 0, b'0', 127, 0, 0, 32767, 0, b'0', 8388607, 0, 0, 2147483647, 0, 0,
      9223372036854775807, 0, 0, 0, 0, 0, 0, 127, 0, b'0', 0, 32767);

-- ===========================================================================================
-- DECIMAL scales up to 38 (MariaDB; MySQL stops at 30)
-- ===========================================================================================
CREATE TABLE decs_scale (
  id   INT PRIMARY KEY,
  d38  DECIMAL(38,38),
  d65  DECIMAL(65,38),
  d39  DECIMAL(39,38),
  d11  DECIMAL(1,1),
  d10  DECIMAL(1,0),
  dint DECIMAL(65,0)
) ENGINE=InnoDB;
INSERT INTO decs_scale VALUES
  -- largest
  (1, 0.99999999999999999999999999999999999999, 999999999999999999999999999.99999999999999999999999999999999999999, 9.99999999999999999999999999999999999999, 0.9, 9, 99999999999999999999999999999999999999999999999999999999999999999),
  -- smallest
  (2, -0.99999999999999999999999999999999999999, -999999999999999999999999999.99999999999999999999999999999999999999, -9.99999999999999999999999999999999999999, -0.9, -9, -99999999999999999999999999999999999999999999999999999999999999999),
  -- zero
  (3, 0, 0, 0, 0, 0, 0),
  -- every digit group distinct, and the smallest magnitudes
  (4, 0.12345678901234567890123456789012345678, 123456789012345678901234567.12345678901234567890123456789012345678,
      -1.00000000000000000000000000000000000001, -0.1, -1, -10000000000000000000000000000000000000000000000000000000000000001),
  (5, 0.00000000000000000000000000000000000001, -0.00000000000000000000000000000000000001, 0.00000000000000000000000000000000000001, 0.1, 1, 10000000000000000000000000000000000000000000000000000000000000000),
  (6, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE decs_scale SET d38 = -0.00000000000000000000000000000000000001, dint = 0 WHERE id = 5;

-- ===========================================================================================
-- 100,000 rows in one transaction, narrow table (rows events split at ~8 KiB)
-- ===========================================================================================
CREATE TABLE big (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB;
BEGIN;
INSERT INTO big SELECT seq, seq * 7 % 1000 FROM seq_1_to_100000;
COMMIT;
UPDATE big SET v = -v WHERE id <= 100;
DELETE FROM big WHERE id > 99990;

FLUSH BINARY LOGS;
