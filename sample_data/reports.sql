-- The morning after: questions operators ask about a campaign, answered from the `results` view
-- (one row per recipient) and the `campaign_summary` view (one row per campaign and status).
--
-- Portable SQL: runs on SQLite, PostgreSQL and MariaDB/MySQL. The campaign is the parameter
-- :campaign (`batch-sender report` names the latest one; the default name of a campaign is
-- <source file stem>-<YYYY-MM-DD>). Give it as each client takes it:
--   sqlite3 -header -column ~/.local/state/batch-sender/batch_sender.db \
--       -cmd ".parameter set :campaign 'daily-2026-12-01'" < sample_data/reports.sql
--   psql "$DATABASE" -v campaign="'daily-2026-12-01'" -f sample_data/reports.sql
--   sed "s/:campaign/'daily-2026-12-01'/g" sample_data/reports.sql | mariadb -t sms

-- 1. How did it go? One line per state, with its message parts (credits, for `sent`).
SELECT status, recipients, parts
FROM campaign_summary
WHERE campaign = :campaign
ORDER BY recipients DESC, status;

-- 2. Who did not get it, and why (everything but `sent`), in source order.
SELECT row_no, msisdn, status, error_code, error_description, attempts, updated_at
FROM results
WHERE campaign = :campaign
  AND status <> 'sent'
ORDER BY row_no;

-- 3. Failures by gateway error code: which problem to fix first.
SELECT error_code, error_description, COUNT(*) AS recipients
FROM results
WHERE campaign = :campaign
  AND status = 'failed'
GROUP BY error_code, error_description
ORDER BY recipients DESC, error_code;

-- 4. Credits used per campaign (one credit per message part accepted by the gateway).
SELECT campaign,
       COUNT(*) AS messages_sent,
       SUM(parts) AS credits
FROM results
WHERE status = 'sent'
GROUP BY campaign
ORDER BY campaign;

-- 5. Outcomes to check by hand: the request left but its answer was lost (`unknown`), or a
--    worker still holds the row (`sending`). Look them up by client message ID before any
--    resend (`batch-sender reconcile`, then `run --resend-unknown` only if the gateway never
--    saw them).
SELECT row_no, msisdn, status, client_message_id, api_message_id, attempts, updated_at
FROM results
WHERE campaign = :campaign
  AND status IN ('unknown', 'sending')
ORDER BY updated_at, row_no;

-- 6. Clean up the source: rows rejected at staging (with the reason) and duplicate numbers.
SELECT row_no, msisdn, status, error_description AS reason
FROM results
WHERE campaign = :campaign
  AND status IN ('rejected', 'duplicate')
ORDER BY status, row_no;

-- 7. Numbers that appear more than once in the source, with how often.
SELECT msisdn, COUNT(*) AS times, MIN(row_no) AS first_row, MAX(row_no) AS last_row
FROM results
WHERE campaign = :campaign
  AND status IN ('sent', 'failed', 'unknown', 'pending', 'duplicate')
GROUP BY msisdn
HAVING COUNT(*) > 1
ORDER BY times DESC, msisdn;

-- 8. Every campaign at a glance: recipients, accepted by the gateway, not sent, open, credits.
SELECT campaign,
       SUM(recipients) AS recipients,
       SUM(CASE WHEN status = 'sent' THEN recipients ELSE 0 END) AS sent,
       SUM(CASE WHEN status IN ('failed', 'rejected', 'expired') THEN recipients ELSE 0 END)
           AS not_sent,
       SUM(CASE WHEN status IN ('unknown', 'sending', 'pending') THEN recipients ELSE 0 END)
           AS still_open,
       SUM(CASE WHEN status = 'sent' THEN parts ELSE 0 END) AS credits
FROM campaign_summary
GROUP BY campaign
ORDER BY campaign;
