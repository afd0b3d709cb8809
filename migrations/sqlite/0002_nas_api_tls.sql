-- RouterOS API-SSL for the disconnect fallback (issue 5):
--   api_tls              1 = connect to the API over TLS (RouterOS service api-ssl, 8729)
--   api_tls_fingerprint  SHA-256 of the router's API certificate, colon-separated hex;
--                        when set, only that certificate is accepted
ALTER TABLE nas ADD COLUMN api_tls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nas ADD COLUMN api_tls_fingerprint TEXT;
