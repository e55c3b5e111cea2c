"""Live data: Sentinel-2 from the Copernicus Data Space Ecosystem and the Copernicus DEM from Earth Data Hub."""
