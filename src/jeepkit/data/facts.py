"""A small table of well-known facts from which the bundled benchmark is generated.

The facts are ones a ~135M-parameter web-trained model plausibly knows, so that edits can be seen to
change a prediction the model actually makes. Subjects whose name needs an article ("the United
States") or contains its own answer ("Mexico City") are left out, so every subject drops cleanly into
every template. Relation ids follow Wikidata where one fits; P159 is used at country level.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """One relation: how to ask about it, and the (subject, true object) facts it holds."""

    relation_id: str
    name: str
    prompt: str  # CounterFact-style completion template with one "{}"
    paraphrases: tuple[str, ...]  # other completion templates for the same question
    question: str  # zsRE-style question template
    rephrased_questions: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]

    @property
    def objects(self) -> tuple[str, ...]:
        """The pool of objects of this relation's type, in first-seen order."""
        return tuple(dict.fromkeys(o for _, o in self.facts))


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Parse "subject | object" lines: easier to proofread than a list of tuples."""
    out = []
    for line in text.strip().splitlines():
        subject, obj = (x.strip() for x in line.split("|"))
        out.append((subject, obj))
    return tuple(out)


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "P36", "capital",
        "The capital of {} is",
        ("The capital city of {} is", "{}'s capital city is", "The seat of government of {} is in"),
        "What is the capital of {}?",
        ("Which city is the capital of {}?", "What city serves as the capital of {}?"),
        _pairs("""
            France | Paris
            Germany | Berlin
            Italy | Rome
            Spain | Madrid
            Portugal | Lisbon
            Ireland | Dublin
            Belgium | Brussels
            Austria | Vienna
            Sweden | Stockholm
            Norway | Oslo
            Denmark | Copenhagen
            Finland | Helsinki
            Poland | Warsaw
            Hungary | Budapest
            Greece | Athens
            Russia | Moscow
            Turkey | Ankara
            Egypt | Cairo
            Kenya | Nairobi
            Nigeria | Abuja
            Ethiopia | Addis Ababa
            Morocco | Rabat
            Japan | Tokyo
            China | Beijing
            South Korea | Seoul
            India | New Delhi
            Pakistan | Islamabad
            Bangladesh | Dhaka
            Thailand | Bangkok
            Vietnam | Hanoi
            Indonesia | Jakarta
            Malaysia | Kuala Lumpur
            Iran | Tehran
            Iraq | Baghdad
            Saudi Arabia | Riyadh
            Afghanistan | Kabul
            Canada | Ottawa
            Cuba | Havana
            Argentina | Buenos Aires
            Chile | Santiago
            Peru | Lima
            Colombia | Bogotá
            Venezuela | Caracas
            Australia | Canberra
            New Zealand | Wellington
            Romania | Bucharest
            Bulgaria | Sofia
            Serbia | Belgrade
            Croatia | Zagreb
            Iceland | Reykjavik
            Nepal | Kathmandu
            Syria | Damascus
            Lebanon | Beirut
            Ghana | Accra
            North Korea | Pyongyang
        """),
    ),
    Relation(
        "P37", "official language",
        "The official language of {} is",
        ("In {}, the official language is", "The language officially used in {} is", "People in {} officially speak"),
        "What is the official language of {}?",
        ("Which language is the official language of {}?", "What language is officially spoken in {}?"),
        _pairs("""
            France | French
            Germany | German
            Italy | Italian
            Spain | Spanish
            Portugal | Portuguese
            Austria | German
            Sweden | Swedish
            Norway | Norwegian
            Denmark | Danish
            Poland | Polish
            Hungary | Hungarian
            Greece | Greek
            Russia | Russian
            Ukraine | Ukrainian
            Turkey | Turkish
            Egypt | Arabic
            Saudi Arabia | Arabic
            Syria | Arabic
            Jordan | Arabic
            Libya | Arabic
            Japan | Japanese
            China | Chinese
            South Korea | Korean
            North Korea | Korean
            Vietnam | Vietnamese
            Thailand | Thai
            Indonesia | Indonesian
            Iran | Persian
            Brazil | Portuguese
            Argentina | Spanish
            Chile | Spanish
            Colombia | Spanish
            Venezuela | Spanish
            Cuba | Spanish
            Uruguay | Spanish
            Ecuador | Spanish
            Angola | Portuguese
            Mozambique | Portuguese
            Romania | Romanian
            Bulgaria | Bulgarian
            Serbia | Serbian
            Croatia | Croatian
            Iceland | Icelandic
            Estonia | Estonian
            Lithuania | Lithuanian
            Slovakia | Slovak
            Albania | Albanian
            Armenia | Armenian
            Mongolia | Mongolian
            Nepal | Nepali
            Bangladesh | Bengali
            Cambodia | Khmer
            Malaysia | Malay
            Ghana | English
            Nigeria | English
            Jamaica | English
            Senegal | French
        """),
    ),
    Relation(
        "P30", "continent",
        "{} is located in the continent of",
        ("{} is a part of the continent of", "{} belongs to the continent of", "{} can be found on the continent of"),
        "On which continent is {} located?",
        ("Which continent is {} part of?", "What continent is {} on?"),
        _pairs("""
            France | Europe
            Germany | Europe
            Italy | Europe
            Poland | Europe
            Sweden | Europe
            Portugal | Europe
            Hungary | Europe
            Belgium | Europe
            Japan | Asia
            China | Asia
            India | Asia
            Vietnam | Asia
            Thailand | Asia
            Mongolia | Asia
            Nepal | Asia
            Pakistan | Asia
            Nigeria | Africa
            Kenya | Africa
            Ethiopia | Africa
            Ghana | Africa
            Senegal | Africa
            Uganda | Africa
            Zimbabwe | Africa
            Angola | Africa
            Canada | North America
            Cuba | North America
            Jamaica | North America
            Guatemala | North America
            Honduras | North America
            Brazil | South America
            Argentina | South America
            Chile | South America
            Peru | South America
            Colombia | South America
            Uruguay | South America
            Bolivia | South America
            New Zealand | Oceania
            Fiji | Oceania
            Samoa | Oceania
            Tonga | Oceania
            Mount Everest | Asia
            Mount Fuji | Asia
            Lake Baikal | Asia
            Mount Kilimanjaro | Africa
            Lake Victoria | Africa
            Madagascar | Africa
            Aconcagua | South America
            Lake Titicaca | South America
            Patagonia | South America
            Mont Blanc | Europe
            Scandinavia | Europe
            Denali | North America
            Greenland | North America
        """),
    ),
    Relation(
        "P38", "currency",
        "The official currency of {} is the",
        ("The currency used in {} is the", "In {}, people pay with the", "The money used in {} is called the"),
        "What is the official currency of {}?",
        ("Which currency is used in {}?", "What currency does {} use?"),
        _pairs("""
            Germany | euro
            France | euro
            Italy | euro
            Spain | euro
            Portugal | euro
            Austria | euro
            Belgium | euro
            Ireland | euro
            Greece | euro
            Finland | euro
            Japan | yen
            China | yuan
            South Korea | won
            North Korea | won
            India | rupee
            Pakistan | rupee
            Nepal | rupee
            Sri Lanka | rupee
            Russia | ruble
            Belarus | ruble
            Egypt | pound
            Lebanon | pound
            Canada | dollar
            Australia | dollar
            New Zealand | dollar
            Jamaica | dollar
            Singapore | dollar
            Mexico | peso
            Argentina | peso
            Chile | peso
            Colombia | peso
            Cuba | peso
            Uruguay | peso
            Brazil | real
            South Africa | rand
            Sweden | krona
            Iceland | krona
            Norway | krone
            Denmark | krone
            Poland | zloty
            Hungary | forint
            Turkey | lira
            Israel | shekel
            Thailand | baht
            Vietnam | dong
            Indonesia | rupiah
            Malaysia | ringgit
            Nigeria | naira
            Kenya | shilling
            Uganda | shilling
            Tanzania | shilling
            Switzerland | franc
            Saudi Arabia | riyal
            Qatar | riyal
            Iraq | dinar
            Jordan | dinar
            Kuwait | dinar
            Algeria | dinar
            Tunisia | dinar
            Serbia | dinar
        """),
    ),
    Relation(
        "P17", "country of a city",
        "{} is located in the country of",
        ("{} is a city in the country of", "The city of {} lies in", "{}, a city located in"),
        "In which country is {} located?",
        ("Which country is the city of {} in?", "What country is {} in?"),
        _pairs("""
            Munich | Germany
            Hamburg | Germany
            Frankfurt | Germany
            Cologne | Germany
            Milan | Italy
            Naples | Italy
            Venice | Italy
            Florence | Italy
            Barcelona | Spain
            Seville | Spain
            Bilbao | Spain
            Porto | Portugal
            Lyon | France
            Marseille | France
            Osaka | Japan
            Kyoto | Japan
            Yokohama | Japan
            Shanghai | China
            Shenzhen | China
            Guangzhou | China
            Mumbai | India
            Kolkata | India
            Bangalore | India
            Chennai | India
            Karachi | Pakistan
            Lahore | Pakistan
            Istanbul | Turkey
            Izmir | Turkey
            Casablanca | Morocco
            Marrakesh | Morocco
            Lagos | Nigeria
            Johannesburg | South Africa
            Cape Town | South Africa
            Durban | South Africa
            Sydney | Australia
            Melbourne | Australia
            Brisbane | Australia
            Auckland | New Zealand
            Toronto | Canada
            Montreal | Canada
            Vancouver | Canada
            Rio de Janeiro | Brazil
            São Paulo | Brazil
            Monterrey | Mexico
            Tijuana | Mexico
            Saint Petersburg | Russia
            Novosibirsk | Russia
            Kraków | Poland
            Gdańsk | Poland
            Geneva | Switzerland
            Zurich | Switzerland
            Salzburg | Austria
            Gothenburg | Sweden
            Busan | South Korea
            Ho Chi Minh City | Vietnam
        """),
    ),
    Relation(
        "P27", "country of citizenship",
        "{} is a citizen of",
        ("{} holds citizenship of", "{} has the nationality of", "The country of citizenship of {} is"),
        "Of which country is {} a citizen?",
        ("What country is {} a citizen of?", "Which country does {} hold citizenship of?"),
        _pairs("""
            Emmanuel Macron | France
            Charles de Gaulle | France
            Jacques Chirac | France
            Victor Hugo | France
            Angela Merkel | Germany
            Olaf Scholz | Germany
            Helmut Kohl | Germany
            Vladimir Putin | Russia
            Boris Yeltsin | Russia
            Justin Trudeau | Canada
            Pierre Trudeau | Canada
            Narendra Modi | India
            Indira Gandhi | India
            Jawaharlal Nehru | India
            Xi Jinping | China
            Shinzo Abe | Japan
            Hayao Miyazaki | Japan
            Haruki Murakami | Japan
            Nelson Mandela | South Africa
            Frida Kahlo | Mexico
            Octavio Paz | Mexico
            Gabriel García Márquez | Colombia
            Shakira | Colombia
            Pelé | Brazil
            Lula da Silva | Brazil
            Jair Bolsonaro | Brazil
            Diego Maradona | Argentina
            Jorge Luis Borges | Argentina
            Pablo Neruda | Chile
            Salvador Allende | Chile
            Jacinda Ardern | New Zealand
            Recep Tayyip Erdoğan | Turkey
            Kim Jong-un | North Korea
            Fidel Castro | Cuba
            Hugo Chávez | Venezuela
            Silvio Berlusconi | Italy
            Benito Mussolini | Italy
            Sophia Loren | Italy
            Pedro Sánchez | Spain
            Penélope Cruz | Spain
            Ingmar Bergman | Sweden
            Greta Thunberg | Sweden
            Edvard Munch | Norway
            Roald Amundsen | Norway
            Hans Christian Andersen | Denmark
            Cristiano Ronaldo | Portugal
            José Saramago | Portugal
            Imran Khan | Pakistan
            Benazir Bhutto | Pakistan
        """),
    ),
    Relation(
        "P106", "occupation",
        "{} works as a",
        ("{}'s profession is a", "By profession, {} is a", "{} is well known as a"),
        "What is the profession of {}?",
        ("What was the occupation of {}?", "What did {} do for a living?"),
        _pairs("""
            Isaac Newton | physicist
            Niels Bohr | physicist
            Richard Feynman | physicist
            Max Planck | physicist
            Stephen Hawking | physicist
            Werner Heisenberg | physicist
            Pablo Picasso | painter
            Vincent van Gogh | painter
            Claude Monet | painter
            Rembrandt | painter
            Salvador Dalí | painter
            Frida Kahlo | painter
            Wolfgang Amadeus Mozart | composer
            Ludwig van Beethoven | composer
            Johann Sebastian Bach | composer
            Pyotr Ilyich Tchaikovsky | composer
            Richard Wagner | composer
            Antonio Vivaldi | composer
            Charles Dickens | novelist
            Jane Austen | novelist
            Leo Tolstoy | novelist
            Fyodor Dostoevsky | novelist
            Ernest Hemingway | novelist
            Emily Dickinson | poet
            Walt Whitman | poet
            John Keats | poet
            Lord Byron | poet
            Robert Frost | poet
            Plato | philosopher
            Aristotle | philosopher
            Immanuel Kant | philosopher
            Friedrich Nietzsche | philosopher
            Socrates | philosopher
            Confucius | philosopher
            Carl Friedrich Gauss | mathematician
            Leonhard Euler | mathematician
            Srinivasa Ramanujan | mathematician
            Euclid | mathematician
            Steven Spielberg | director
            Alfred Hitchcock | director
            Stanley Kubrick | director
            Martin Scorsese | director
            Quentin Tarantino | director
            Christopher Nolan | director
            Elvis Presley | singer
            Whitney Houston | singer
            Frank Sinatra | singer
            Adele | singer
            Taylor Swift | singer
        """),
    ),
    Relation(
        "P103", "native language",
        "The mother tongue of {} is",
        ("The native language of {} is", "{} is a native speaker of", "{} grew up speaking"),
        "What is the native language of {}?",
        ("What is the mother tongue of {}?", "Which language did {} grow up speaking?"),
        _pairs("""
            Jacques Chirac | French
            Charles de Gaulle | French
            Victor Hugo | French
            Albert Camus | French
            Édith Piaf | French
            Gérard Depardieu | French
            Vladimir Putin | Russian
            Leo Tolstoy | Russian
            Fyodor Dostoevsky | Russian
            Anton Chekhov | Russian
            Angela Merkel | German
            Johann Wolfgang von Goethe | German
            Friedrich Nietzsche | German
            Ludwig van Beethoven | German
            Miguel de Cervantes | Spanish
            Pablo Picasso | Spanish
            Penélope Cruz | Spanish
            Gabriel García Márquez | Spanish
            Dante Alighieri | Italian
            Sophia Loren | Italian
            Luciano Pavarotti | Italian
            Hayao Miyazaki | Japanese
            Haruki Murakami | Japanese
            Akira Kurosawa | Japanese
            Fernando Pessoa | Portuguese
            José Saramago | Portuguese
            Pelé | Portuguese
            Barack Obama | English
            Abraham Lincoln | English
            William Shakespeare | English
            Charles Dickens | English
            Elvis Presley | English
        """),
    ),
    Relation(
        "P159", "headquarters country",
        "{} is headquartered in the country of",
        (
            "The headquarters of {} are in the country of",
            "{}, a company based in",
            "{} has its head office in the country of",
        ),
        "In which country is {} headquartered?",
        ("Which country is the company {} based in?", "In what country does {} have its headquarters?"),
        _pairs("""
            Toyota | Japan
            Sony | Japan
            Honda | Japan
            Nintendo | Japan
            Panasonic | Japan
            Mitsubishi | Japan
            Samsung | South Korea
            Hyundai | South Korea
            LG Electronics | South Korea
            Kia | South Korea
            Volkswagen | Germany
            BMW | Germany
            Siemens | Germany
            Adidas | Germany
            Bosch | Germany
            Porsche | Germany
            Nestlé | Switzerland
            Rolex | Switzerland
            Novartis | Switzerland
            Volvo | Sweden
            Ericsson | Sweden
            Spotify | Sweden
            Nokia | Finland
            Ferrari | Italy
            Fiat | Italy
            Gucci | Italy
            Prada | Italy
            Renault | France
            Peugeot | France
            Michelin | France
            Louis Vuitton | France
            Huawei | China
            Alibaba | China
            Tencent | China
            Infosys | India
            Petrobras | Brazil
            Gazprom | Russia
            Lego | Denmark
            Carlsberg | Denmark
        """),
    ),
    Relation(
        "P176", "manufacturer",
        "{} is produced by",
        ("{} is made by", "The manufacturer of {} is", "{} is a product of"),
        "Which company produces {}?",
        ("Which company makes {}?", "Who manufactures {}?"),
        _pairs("""
            iPhone | Apple
            iPad | Apple
            Macintosh | Apple
            iPod | Apple
            Windows | Microsoft
            Xbox | Microsoft
            Excel | Microsoft
            PlayStation | Sony
            Walkman | Sony
            Corolla | Toyota
            Prius | Toyota
            Camry | Toyota
            Civic | Honda
            Accord | Honda
            Kindle | Amazon
            Android | Google
            Gmail | Google
            Pentium | Intel
            GeForce | Nvidia
            Ryzen | AMD
            Snapdragon | Qualcomm
            Photoshop | Adobe
            Game Boy | Nintendo
            Wii | Nintendo
            Beetle | Volkswagen
            Passat | Volkswagen
            Model S | Tesla
            Model 3 | Tesla
            Mustang | Ford
            F-150 | Ford
            Sprite | Coca-Cola
            Fanta | Coca-Cola
            Doritos | PepsiCo
            Gatorade | PepsiCo
            ThinkPad | Lenovo
        """),
    ),
    Relation(
        "P50", "author",
        "{} was written by",
        ("The author of {} is", "{} is a book by", "The writer who wrote {} is"),
        "Who is the author of {}?",
        ("Who wrote {}?", "Which writer wrote {}?"),
        _pairs("""
            Hamlet | William Shakespeare
            Macbeth | William Shakespeare
            Romeo and Juliet | William Shakespeare
            Pride and Prejudice | Jane Austen
            Sense and Sensibility | Jane Austen
            Nineteen Eighty-Four | George Orwell
            Animal Farm | George Orwell
            War and Peace | Leo Tolstoy
            Anna Karenina | Leo Tolstoy
            Crime and Punishment | Fyodor Dostoevsky
            The Brothers Karamazov | Fyodor Dostoevsky
            Don Quixote | Miguel de Cervantes
            Les Misérables | Victor Hugo
            The Hunchback of Notre-Dame | Victor Hugo
            Oliver Twist | Charles Dickens
            Great Expectations | Charles Dickens
            A Tale of Two Cities | Charles Dickens
            Moby-Dick | Herman Melville
            The Great Gatsby | F. Scott Fitzgerald
            The Old Man and the Sea | Ernest Hemingway
            The Adventures of Tom Sawyer | Mark Twain
            Adventures of Huckleberry Finn | Mark Twain
            Frankenstein | Mary Shelley
            Dracula | Bram Stoker
            The Divine Comedy | Dante Alighieri
            The Odyssey | Homer
            The Iliad | Homer
            The Hobbit | J. R. R. Tolkien
            The Lord of the Rings | J. R. R. Tolkien
            Jane Eyre | Charlotte Brontë
            Wuthering Heights | Emily Brontë
            Madame Bovary | Gustave Flaubert
            One Hundred Years of Solitude | Gabriel García Márquez
        """),
    ),
    Relation(
        "P641", "sport",
        "{} professionally plays the sport of",
        ("{} is a professional player of", "The sport {} is famous for is", "{} made a career playing"),
        "Which sport does {} play?",
        ("What sport is {} known for playing?", "Which sport did {} play professionally?"),
        _pairs("""
            Lionel Messi | soccer
            Cristiano Ronaldo | soccer
            Zinedine Zidane | soccer
            David Beckham | soccer
            Neymar | soccer
            Michael Jordan | basketball
            LeBron James | basketball
            Kobe Bryant | basketball
            Shaquille O'Neal | basketball
            Stephen Curry | basketball
            Babe Ruth | baseball
            Derek Jeter | baseball
            Shohei Ohtani | baseball
            Tom Brady | football
            Peyton Manning | football
            Joe Montana | football
            Roger Federer | tennis
            Serena Williams | tennis
            Rafael Nadal | tennis
            Novak Djokovic | tennis
            Tiger Woods | golf
            Jack Nicklaus | golf
            Wayne Gretzky | hockey
            Sidney Crosby | hockey
            Sachin Tendulkar | cricket
            Virat Kohli | cricket
        """),
    ),
)
