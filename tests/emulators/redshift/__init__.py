"""Building blocks of the Redshift Data API emulator; the public face is
`tests.emulators.redshift_data.RedshiftDataEmulator`."""
