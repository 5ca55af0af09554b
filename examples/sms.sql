-- A table used as a job queue: the application writes the text messages it
-- wants sent into `notify.sms_outbox`, in the same transactions as the rest
-- of its data, and never talks to the SMS gateway itself. Recorded into
-- examples/binlog/sms-bin.000001 by examples/record-binlog.sh.
-- Deterministic: fixed timestamps, explicit ids.
SET timestamp = 1763712000;
SET time_zone = '+00:00';
DROP DATABASE IF EXISTS notify;
CREATE DATABASE notify;
USE notify;

CREATE TABLE sms_outbox (
  id         BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  phone      VARCHAR(20)     NOT NULL,                 -- E.164
  body       VARCHAR(160)    NOT NULL,                 -- one SMS
  status     ENUM('draft','pending','sent','failed') NOT NULL DEFAULT 'pending',
  created_at DATETIME        NOT NULL,
  sent_at    DATETIME        NULL
) DEFAULT CHARSET = utf8mb4;

-- A login code, committed on its own.
INSERT INTO sms_outbox (id, phone, body, created_at) VALUES
  (1, '+4915112345678', 'Your code is 1234', '2025-11-21 08:00:00');

-- An order's two messages, written in one transaction with one statement.
BEGIN;
INSERT INTO sms_outbox (id, phone, body, created_at) VALUES
  (2, '+4915112345678', 'Order 1001 confirmed: 2 items, 24.90 EUR', '2025-11-21 08:05:00'),
  (3, '+33612345678', 'Commande 1001 expédiée, suivi "FR-7781"', '2025-11-21 08:05:00');
COMMIT;

-- The gateway's delivery report for the login code: a change, no new job.
UPDATE sms_outbox SET status = 'sent', sent_at = '2025-11-21 08:00:04' WHERE id = 1;

-- A campaign saved as a draft: not to be sent (yet), so no job.
INSERT INTO sms_outbox (id, phone, body, status, created_at) VALUES
  (4, '+4915112345678', 'Winter sale: 20% off everything', 'draft', '2025-11-21 09:00:00');

-- Sent messages are purged: a delete, no job.
DELETE FROM sms_outbox WHERE id = 1;

-- Another login code.
INSERT INTO sms_outbox (id, phone, body, created_at) VALUES
  (5, '+15550100', 'Your code is 9876', '2025-11-21 10:30:00');

FLUSH BINARY LOGS;
