from afpipe.cli import main

raise SystemExit(main())
