-- RouterOS API-SSL for the disconnect fallback (issue 5):
--   api_tls              true = connect to the API over TLS (RouterOS service api-ssl, 8729)
--   api_tls_fingerprint  SHA-256 of the router's API certificate, colon-separated hex;
--                        when set, only that certificate is accepted
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_tls boolean NOT NULL DEFAULT false;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_tls_fingerprint text;
