-- The rotation schedule is stored under its one name, rotation_schedule (it was stored as
-- cron, the API's name for it before; cron is now an alias, accepted and reported as one).
UPDATE settings SET name = 'rotation_schedule' WHERE name = 'cron';
