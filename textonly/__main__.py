from textonly.cli.main import main

raise SystemExit(main())
