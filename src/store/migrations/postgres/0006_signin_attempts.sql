-- A failed sign-in is recorded before its password is checked (a reservation, under the
-- attempt's id), so concurrent guesses cannot all pass the limit; a sign-in that succeeds
-- takes its reservation back by that id.

ALTER TABLE sign_in_failures ADD COLUMN attempt TEXT;
CREATE INDEX sign_in_failures_attempt ON sign_in_failures (attempt);
