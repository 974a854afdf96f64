DROP INDEX IF EXISTS orders_user_status_stats;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS users;
