from textonly.cli import main

raise SystemExit(main())
