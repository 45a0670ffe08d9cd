"""The hosted SFTP drop box: callstream's own SFTP server (see :mod:`streams.dropbox.server`)."""
