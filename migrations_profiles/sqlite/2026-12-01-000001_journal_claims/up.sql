-- Who holds a pending entry, and until when (RFC 3339 text; '' = nobody): the request
-- that made it while it runs, then whoever claims it to settle it. Nobody else settles
-- an entry before its claim runs out.
ALTER TABLE email_journal ADD COLUMN claimed_until TEXT NOT NULL DEFAULT '';

-- Every update looks for a pending entry of its user: an index of pending entries only.
CREATE INDEX email_journal_pending_user ON email_journal (user_id) WHERE state = 'pending';
