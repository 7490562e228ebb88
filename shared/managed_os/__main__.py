from managed_os.cli import main

raise SystemExit(main())
