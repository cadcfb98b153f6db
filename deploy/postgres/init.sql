-- Runs once, when the PostgreSQL volume is first initialised: the databases of the Temporal
-- server (persistence and visibility) and of the payout engine, each with its own role.
CREATE ROLE temporal LOGIN PASSWORD 'temporal';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE ROLE payouts LOGIN PASSWORD 'payouts';
CREATE DATABASE payouts OWNER payouts;
