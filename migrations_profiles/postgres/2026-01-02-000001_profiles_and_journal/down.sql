DROP TABLE email_journal;
DROP TABLE profiles;
