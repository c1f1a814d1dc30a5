"""Getting data in: the three sources (CRM API, web events, POS files) landed into the
immutable raw zone, with quarantine and reconciliation.

    extract      the one entry point (``run_extract(source, settings, date)``)
    crm          the CRM extractor (HubSpot CRM API v3)
    web, pos     the landing-folder loaders
    landing/     reading and checking landing files (shared with ``c360 validate-landing``)
    raw_zone     the Parquet raw zone writer and the reconciliation log
    state        what has been landed: one store for all three sources
"""
