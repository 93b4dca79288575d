from cfrh_train.cli import main

main()
