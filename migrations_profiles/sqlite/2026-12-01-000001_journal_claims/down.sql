DROP INDEX email_journal_pending_user;
ALTER TABLE email_journal DROP COLUMN claimed_until;
