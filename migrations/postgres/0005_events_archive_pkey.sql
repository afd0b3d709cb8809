-- radacct_events_archive had no primary key: the archiver's `ON CONFLICT DO NOTHING` never
-- fired there and finding an event by id scanned the whole table (once per event moved).
-- Give it the primary key on `id` that radacct_events has.
--
-- Copies of one event (same id, same values), which a re-run could leave, are removed
-- first, keeping one. Rows that share an id but differ (a panel's own archive job, ids
-- reused after a restore) are not radacctd's to choose between: all but one are moved,
-- untouched, to radacct_events_archive_conflicts for a person to resolve.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'radacct_events_archive_pkey') THEN
        RETURN;
    END IF;

    DELETE FROM radacct_events_archive a USING radacct_events_archive b
    WHERE a.id = b.id AND a.ctid > b.ctid
      AND (a.radacctid, a.eventtype, a.eventtime, a.acctsessiontime, a.acctinputoctets,
           a.acctoutputoctets, a.source)
          IS NOT DISTINCT FROM
          (b.radacctid, b.eventtype, b.eventtime, b.acctsessiontime, b.acctinputoctets,
           b.acctoutputoctets, b.source);

    IF EXISTS (SELECT id FROM radacct_events_archive GROUP BY id HAVING COUNT(*) > 1) THEN
        CREATE TABLE IF NOT EXISTS radacct_events_archive_conflicts
            (LIKE radacct_events_archive INCLUDING DEFAULTS);
        WITH moved AS (
            DELETE FROM radacct_events_archive a USING radacct_events_archive b
            WHERE a.id = b.id AND a.ctid > b.ctid
            RETURNING a.*
        )
        INSERT INTO radacct_events_archive_conflicts SELECT * FROM moved;
        RAISE WARNING 'radacct_events_archive: events sharing an id were moved to radacct_events_archive_conflicts';
    END IF;

    ALTER TABLE radacct_events_archive
        ADD CONSTRAINT radacct_events_archive_pkey PRIMARY KEY (id);
END $$;
