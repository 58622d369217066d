from data_gen.vectorize.run import main

main()
