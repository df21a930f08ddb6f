"""The BACnet/IP face: point table, device builder and the adapter that syncs it with the core."""
