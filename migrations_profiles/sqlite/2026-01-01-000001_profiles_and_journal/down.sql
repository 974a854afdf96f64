DROP INDEX IF EXISTS email_journal_pending;
DROP TABLE IF EXISTS email_journal;
DROP TABLE IF EXISTS profiles;
