"""Remote services, in one place: CDSE's STAC API and S3, Earth Data Hub's Zarr DEM, reached the same way.

- ``endpoints``: where the services are (defaults, ``$EOTWIN_*``, options), and the one ``--s3-endpoint`` parser;
- ``credentials``: keys and tokens as :class:`~eotwin.io.remote.credentials.Secret`, never printed;
- ``access``: endpoints and credentials resolved once per command (:class:`~eotwin.io.remote.access.RemoteAccess`);
- ``retry``: the one retry policy (transient statuses, doubling backoff, Retry-After capped at 30 s);
- ``http``: small fetches (items, XML metadata), S3-signed, capped at 64 MiB and 300 s;
- ``gdal``: the one GDAL environment for remote raster reads;
- ``stac_api``: the one STAC API client (search with a paging stop, items by id);
- ``edh_dem``, ``cache``: the DEM slice and the local cache (the windows of Sentinel-2 assets are read by ``eotwin.sentinel2.windows``).
"""
