-- radacct_archive created before radacctd (by a panel's own archival job, or an older
-- FreeRADIUS schema) lacks the columns radacctd adds to radacct; the archiver copies
-- every radacct column, so add them here as 0001 does for radacct.
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS nas_id bigint;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS sessionkey text;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS stopsource text;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS framedipv6address inet;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS framedipv6prefix inet;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS framedinterfaceid text;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS delegatedipv6prefix inet;
ALTER TABLE radacct_archive ADD COLUMN IF NOT EXISTS class text;
