-- A small shop, recorded into examples/binlog/ by examples/record-binlog.sh.
-- Deterministic: fixed timestamps, explicit ids.
SET timestamp = 1763712000;
SET time_zone = '+00:00';
DROP DATABASE IF EXISTS shop;
CREATE DATABASE shop;
USE shop;

CREATE TABLE user_info (
  id         INT UNSIGNED NOT NULL PRIMARY KEY,
  email      VARCHAR(128) NOT NULL,
  name       VARCHAR(64)  NOT NULL,
  ip         VARCHAR(45)  NOT NULL,
  created_at DATETIME     NOT NULL
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE orders (
  id         BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  user_id    INT UNSIGNED    NOT NULL,
  amount     DECIMAL(12,2)   NOT NULL,
  currency   CHAR(3)         NOT NULL,
  status     ENUM('new','paid','shipped','cancelled') NOT NULL,
  created_at TIMESTAMP(3)    NOT NULL
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE sms_outbox (
  id    BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  phone VARCHAR(20)     NOT NULL,
  body  VARCHAR(160)    NOT NULL
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE news (
  id    INT UNSIGNED NOT NULL PRIMARY KEY,
  title VARCHAR(200) NOT NULL,
  body  TEXT         NOT NULL
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE hits (
  id   BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  ip   VARCHAR(45)     NOT NULL,
  path VARCHAR(200)    NOT NULL
) DEFAULT CHARSET = utf8mb4;

INSERT INTO user_info VALUES
  (1, 'ana@example.com',  'Ana',    '203.0.113.7',  '2025-11-21 08:00:00'),
  (2, 'bob@example.com',  'Bob',    '198.51.100.2', '2025-11-21 09:30:00'),
  (3, 'chen@example.com', 'Chen',   '192.0.2.44',   '2025-11-22 10:15:00'),
  (4, 'zoe@example.com',  'Zoë',    '203.0.113.7',  '2025-11-22 23:59:59');

BEGIN;
INSERT INTO orders VALUES (1001, 1, 12.50, 'EUR', 'new', '2025-11-21 08:05:00.250');
INSERT INTO sms_outbox VALUES (1, '+15550100', 'Your order 1001 is confirmed');
COMMIT;

BEGIN;
INSERT INTO orders VALUES (1002, 2, 99.99, 'USD', 'new', '2025-11-21 09:31:00.000');
INSERT INTO orders VALUES (1003, 2, 5.00, 'USD', 'new', '2025-11-21 09:32:00.000');
COMMIT;

UPDATE orders SET status = 'paid' WHERE id = 1001;
UPDATE orders SET status = 'paid', amount = 89.99 WHERE id = 1002;
DELETE FROM orders WHERE id = 1003;

INSERT INTO news VALUES (1, 'We opened', 'Welcome to the shop.');
UPDATE news SET title = 'We are open' WHERE id = 1;
INSERT INTO news VALUES (2, 'Winter sale', '20% off everything.');

INSERT INTO hits VALUES
  (1, '203.0.113.7', '/'), (2, '203.0.113.7', '/login'), (3, '198.51.100.2', '/'),
  (4, '203.0.113.7', '/login'), (5, '203.0.113.7', '/login'), (6, '203.0.113.7', '/login');

INSERT INTO sms_outbox VALUES (2, '+15550101', 'Your order 1002 has shipped');
UPDATE orders SET status = 'shipped' WHERE id = 1002;

-- The winter sale is over: its news item goes, and its page with it.
DELETE FROM news WHERE id = 2;

FLUSH BINARY LOGS;
